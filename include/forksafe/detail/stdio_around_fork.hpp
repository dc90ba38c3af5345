// SPDX-License-Identifier: MIT
//
// forksafe/detail/stdio_around_fork.hpp: what forksafe does with C stdio and
// the standard C++ streams around a fork, so no output is printed twice and
// no child hangs on a stream lock: the parent flushes before fork(), the
// child drops what another thread buffered in between, and flushes its own
// without waiting for a lock a vanished thread held.

#ifndef FORKSAFE_DETAIL_STDIO_AROUND_FORK_HPP
#define FORKSAFE_DETAIL_STDIO_AROUND_FORK_HPP

#include "config.hpp"

#include <array>     // output_marks
#include <cstddef>   // std::size_t
#include <cstdio>    // fflush, ftrylockfile
#include <iostream>  // std::cout, std::clog, std::cerr
#include <ostream>   // std::ostream
#include <streambuf> // std::streambuf: is output waiting in a C++ stream?

#if defined(__has_include)
#if __has_include(<stdio_ext.h>)
#include <stdio_ext.h> // __fpending, __fpurge: is output waiting in a FILE, read without writing to it
#define FORKSAFE_HAS_FPENDING 1
#endif
#endif
#ifndef FORKSAFE_HAS_FPENDING
#define FORKSAFE_HAS_FPENDING 0
#endif

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// Flushes a C++ stream, swallowing the exception a stream with exceptions()
/// set may throw: a failed flush must not stop a fork or a child's _exit.
inline void flush_quietly(std::ostream& s) noexcept {
  try {
    s.flush();
  } catch (...) {
    // The stream's state records the failure; its owner sees it there.
  }
}

// Whether a stream holds output it has not written yet, found by reading
// only: in a forked child the first write to a page copies it (about 15 us
// per page on a small VM), so the child's flush must not touch streams that
// have nothing to flush (the common case) and cost every fork_call that much.
inline bool has_pending_output(FILE* f) noexcept {
#if defined(__GLIBC__)
  // What glibc's __fpending computes, inline: calling it would fault in one
  // more page of libc's code in the child.
  return f->_IO_write_ptr > f->_IO_write_base;
#elif FORKSAFE_HAS_FPENDING
  return __fpending(f) > 0;
#else
  (void)f;
  return true; // cannot tell without writing: flush
#endif
}

struct streambuf_peek : std::streambuf {
  // A std::streambuf whose put area is not empty. Reads pptr() and pbase()
  // through a pointer to member formed in a derived class (protected access).
  static bool has_pending_output(std::streambuf* b) noexcept {
    if (b == nullptr) return false;
    char* (std::streambuf::*next)() const = &streambuf_peek::pptr;
    char* (std::streambuf::*begin)() const = &streambuf_peek::pbase;
    return (b->*next)() != (b->*begin)();
  }
  // Empties the put area without writing it.
  static void discard_pending_output(std::streambuf* b) noexcept {
    if (!has_pending_output(b)) return;
    char* (std::streambuf::*begin)() const = &streambuf_peek::pbase;
    char* (std::streambuf::*end)() const = &streambuf_peek::epptr;
    void (std::streambuf::*set)(char*, char*) = &streambuf_peek::setp;
    (b->*set)((b->*begin)(), (b->*end)());
  }
};

/// Which standard C++ streams the parent's flush (flush_stdio_in_parent)
/// left empty, taken just before fork(). A stream buffer that writes to a
/// device is empty after a flush; one that keeps its text in memory (a
/// std::stringbuf behind std::cout) is not, and is left alone in the child.
struct output_marks {
  std::array<std::streambuf*, 3> emptied{};
};

inline output_marks mark_output() noexcept {
  output_marks m;
  std::size_t i = 0;
  for (std::ostream* s : {&std::cout, &std::clog, &std::cerr}) {
    std::streambuf* const b = s->rdbuf();
    m.emptied[i++] = streambuf_peek::has_pending_output(b) ? nullptr : b;
  }
  return m;
}

/// In a forked child, before anything else: drop what another of the
/// parent's threads wrote to stdout, stderr or a standard C++ stream between
/// the parent's flush and fork(). It is the parent's to print, and the
/// parent will; flushing it in the child as well (at the child's exit)
/// printed it twice. What a flush does not empty (in-memory buffers) is
/// kept. A stream with nothing waiting is not written to (no page copied).
inline void discard_inherited_output(const output_marks& m) noexcept {
  std::size_t i = 0;
  for (std::ostream* s : {&std::cout, &std::clog, &std::cerr}) {
    if (m.emptied[i] != nullptr && s->rdbuf() == m.emptied[i]) streambuf_peek::discard_pending_output(m.emptied[i]);
    ++i;
  }
#if FORKSAFE_HAS_FPENDING
  for (FILE* f : {stdout, stderr}) {
    if (has_pending_output(f)) __fpurge(f); // after the parent's fflush, all of it is new
  }
#endif
}

/// Flush std::cout, std::clog, std::cerr and every C stdio stream in the
/// parent before fork(), so the child does not inherit unwritten output and
/// print it a second time. The C++ streams go first: detached from stdio
/// (sync_with_stdio(false)) they hold output in their own buffers. A C++
/// stream with nothing in its put area (always so while synchronised with
/// stdio, the default) is skipped: its flush would only flush stdout again
/// and write to one more page that the last fork made copy-on-write. A
/// detached stream is not thread-safe, so it must not be written to by
/// another thread while a thread forks.
inline void flush_stdio_in_parent() noexcept {
  for (std::ostream* s : {&std::cout, &std::clog, &std::cerr}) {
    if (streambuf_peek::has_pending_output(s->rdbuf())) flush_quietly(*s);
  }
  std::fflush(nullptr);
}

/// Flush std::cout, std::clog, std::cerr, stdout and stderr in a forked child
/// without risking a hang: a FILE locked by a thread that did not survive
/// fork() is skipped, and so is the C++ stream that writes into it (flushing
/// a synchronised std::cout locks stdout). FILE locks are recursive, so the
/// C++ flush runs under the lock taken here. A stream with nothing waiting is
/// not touched at all (see has_pending_output); a stream buffer that keeps
/// output outside its put area is therefore not flushed.
inline void flush_stdio_in_child() noexcept {
  const bool cout_waits = streambuf_peek::has_pending_output(std::cout.rdbuf());
  const bool cerr_waits =
      streambuf_peek::has_pending_output(std::clog.rdbuf()) || streambuf_peek::has_pending_output(std::cerr.rdbuf());
  if ((cout_waits || has_pending_output(stdout)) && ftrylockfile(stdout) == 0) {
    if (cout_waits) flush_quietly(std::cout);
    fflush_unlocked(stdout);
    funlockfile(stdout);
  }
  if ((cerr_waits || has_pending_output(stderr)) && ftrylockfile(stderr) == 0) {
    if (cerr_waits) {
      flush_quietly(std::clog);
      flush_quietly(std::cerr);
    }
    fflush_unlocked(stderr);
    funlockfile(stderr);
  }
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_STDIO_AROUND_FORK_HPP
