// SPDX-License-Identifier: MIT
//
// forksafe/detail/result_frame.hpp: how a child's outcome travels to its
// parent, both sides: the frame (a small value, "the value is in the shared
// mapping", "the value's wire form is in a memfd", or an exception's type
// and what()), written by fork_call's child and by pool workers, read by the
// parent's process_result.
//
// A frame is at most PIPE_BUF bytes, so one write() puts all of it in an
// empty pipe at once and the child never blocks on a full pipe. A value that
// crosses as its bytes and is larger than inline_result_limit (or
// over-aligned) is built in place, by guaranteed copy elision, in a shared
// mapping instead; a value written in its wire form (detail/wire.hpp) whose
// form is larger goes into a memfd, sealed against shrinking before the
// parent reads it.

#ifndef FORKSAFE_DETAIL_RESULT_FRAME_HPP
#define FORKSAFE_DETAIL_RESULT_FRAME_HPP

#include "../child_error.hpp"
#include "config.hpp"
#include "owner_process.hpp"
#include "stdio_around_fork.hpp"
#include "wire.hpp"

#include <algorithm>   // std::max
#include <cerrno>      // errno, EINTR, EAGAIN
#include <climits>     // PIPE_BUF
#include <concepts>    // the store
#include <cstddef>     // std::size_t
#include <cstdint>     // the header's fields
#include <cstdlib>     // std::free: __cxa_demangle's buffer
#include <cstring>     // std::memcpy, strnlen
#include <exception>   // std::exception: what() of what the child threw
#include <new>         // placement new
#include <string>      // demangle
#include <type_traits> // std::is_void_v
#include <typeinfo>    // std::type_info: the type of what the child threw

#include <poll.h>     // poll: a pipe that is somehow full
#include <sys/mman.h> // madvise: fault a region in at once
#include <unistd.h>   // write, read, getpid, _exit

#if defined(__has_include)
#if __has_include(<cxxabi.h>)
#include <cxxabi.h> // abi::__cxa_current_exception_type, abi::__cxa_demangle
#define FORKSAFE_HAS_CXXABI 1
#endif
#endif
#ifndef FORKSAFE_HAS_CXXABI
#define FORKSAFE_HAS_CXXABI 0
#endif

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// Results up to this size travel inline in the frame and live in the handle;
/// larger ones (or over-aligned ones) are built in a shared mapping.
inline constexpr std::size_t inline_result_limit = 1024;
/// get() && returns T by value, on the caller's stack: refused above this size.
inline constexpr std::size_t by_value_result_limit = std::size_t{1} << 20;

// The frame: a header, then at frame_payload_offset the payload (the value,
// or the exception's mangled type name followed by what()).
inline constexpr std::size_t frame_payload_offset = 64;
inline constexpr std::uint32_t frame_magic = 0x666b636cU; // "fkcl"
inline constexpr std::uint32_t frame_what_truncated = 1U;
enum class frame_kind : std::uint32_t { value = 1, value_in_region = 2, threw = 3, value_in_memfd = 4 };
struct frame_header {
  std::uint32_t magic;
  frame_kind kind;
  std::uint32_t size;      ///< payload bytes
  std::uint32_t type_size; ///< threw: bytes of the type name at the start of the payload
  std::uint32_t flags;     ///< threw: frame_what_truncated
};
inline constexpr std::size_t frame_capacity =
    frame_payload_offset +
    std::max(inline_result_limit, child_error::max_type_name_length + child_error::max_what_length);
static_assert(sizeof(frame_header) <= frame_payload_offset, "the frame header must fit before the payload");
static_assert(frame_capacity <= PIPE_BUF,
              "a frame must be one atomic pipe write, so the child never blocks on a full pipe");

/// The alignment the shared region (page-aligned) can give a result.
inline constexpr std::size_t max_result_alignment = 4096;

template <class T>
consteval std::size_t result_alignment() {
  if constexpr (std::is_void_v<T>) {
    return 1;
  } else {
    return alignof(T);
  }
}

template <class T>
consteval bool stored_in_region() {
  if constexpr (std::is_void_v<T> || needs_wire_form<T>) {
    return false;
  } else {
    return sizeof(T) > inline_result_limit || alignof(T) > frame_payload_offset;
  }
}

/// The length of the longest prefix of `s` of at most `max` bytes that does
/// not end inside a UTF-8 multi-byte character; `truncated` says whether the
/// string was longer.
inline std::size_t utf8_prefix(const char* s, std::size_t max, bool& truncated) noexcept {
  std::size_t n = ::strnlen(s, max + 1);
  truncated = n > max;
  if (!truncated) return n;
  n = max;
  // s[n] is the first byte left out; while it continues a character, the
  // character began inside the prefix: leave all of it out.
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0U) == 0x80U) --n;
  return n;
}

/// The child's side of the frame, with room for `PayloadCapacity` bytes:
/// built on the child's stack, written once. Sized to what is sent, because
/// every stack page the child touches is a copy-on-write fault (see
/// flush_stdio_in_child): a value's frame is small, and only the exception
/// path pays for the room an exception's texts need.
template <std::size_t PayloadCapacity>
class frame_writer {
public:
  /// Where a small result is constructed in place.
  [[nodiscard]] void* value_slot() noexcept { return buffer_ + frame_payload_offset; }

  void set_value(std::size_t size) noexcept { set_header(frame_kind::value, size, 0, 0); }
  void set_value_in_region() noexcept { set_header(frame_kind::value_in_region, 0, 0, 0); }
  /// The value's wire form, `size` bytes, is in the memfd the store made.
  void set_value_in_memfd(std::uint64_t size) noexcept {
    static_assert(PayloadCapacity >= sizeof size, "the frame must have room for the wire form's size");
    std::memcpy(buffer_ + frame_payload_offset, &size, sizeof size);
    set_header(frame_kind::value_in_memfd, sizeof size, 0, 0);
  }

  /// Records the exception being handled: its mangled type name and, for a
  /// std::exception, what(). Precondition: called inside a catch handler.
  /// Allocates nothing (demangling happens in the parent).
  void set_current_exception() noexcept {
    const char* type = "";
#if FORKSAFE_HAS_CXXABI
    if (const std::type_info* t = abi::__cxa_current_exception_type()) type = t->name();
#endif
    const char* what = "";
    try {
      throw;
    } catch (const std::exception& e) {
      if (const char* w = e.what()) what = w;
    } catch (...) {
      // Not a std::exception: the type name is all there is.
    }
    bool type_cut = false;
    bool what_cut = false;
    const std::size_t type_size = utf8_prefix(type, child_error::max_type_name_length, type_cut);
    const std::size_t what_size = utf8_prefix(what, child_error::max_what_length, what_cut);
    static_assert(PayloadCapacity >= child_error::max_type_name_length + child_error::max_what_length,
                  "an exception frame needs room for the type name and what()");
    std::memcpy(buffer_ + frame_payload_offset, type, type_size);
    std::memcpy(buffer_ + frame_payload_offset + type_size, what, what_size);
    set_header(frame_kind::threw, type_size + what_size, type_size, what_cut ? frame_what_truncated : 0U);
  }

  /// The frame's bytes, for a transport other than the pipe (process_pool's slot).
  [[nodiscard]] const unsigned char* data() const noexcept { return buffer_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  /// Writes the frame in one write() (atomic: at most PIPE_BUF bytes), retrying
  /// EINTR and waiting out (at most 1 s) a pipe that is somehow full.
  bool write_to(int fd) noexcept {
    std::size_t done = 0;
    while (done < size_) {
      const ssize_t n = ::write(fd, buffer_ + done, size_ - done);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && errno == EAGAIN) {
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, 1000) == 0) return false;
      } else {
        return false;
      }
    }
    return true;
  }

private:
  void set_header(frame_kind kind, std::size_t size, std::size_t type_size, std::uint32_t flags) noexcept {
    const frame_header h{frame_magic, kind, static_cast<std::uint32_t>(size), static_cast<std::uint32_t>(type_size),
                         flags};
    std::memset(buffer_, 0, frame_payload_offset); // the bytes between header and payload travel too
    std::memcpy(buffer_, &h, sizeof h);
    size_ = frame_payload_offset + size;
  }

  // NOLINTNEXTLINE(modernize-avoid-c-arrays): raw storage (a value is built at value_slot())
  alignas(frame_payload_offset) unsigned char buffer_[frame_payload_offset + PayloadCapacity];
  std::size_t size_ = 0;
};

/// The payload room a value of type T needs in its frame: itself when it
/// travels inline, nothing otherwise.
template <class T>
consteval std::size_t value_payload_capacity() {
  if constexpr (std::is_void_v<T> || stored_in_region<T>()) {
    return 0;
  } else if constexpr (needs_wire_form<T>) {
    return sizeof(std::uint64_t); // the memfd's size; an inline form gets a frame of its own (sink_wire_inline)
  } else {
    return sizeof(T);
  }
}

/// Unless this is a process the callable forked, which came back into
/// fork_call (only the child reports): flush, write the frame. Returns the
/// exit code.
template <std::size_t N>
int deliver(frame_writer<N>& frame, owner_process self, int fd) noexcept {
  if (!self.here()) return 0;
  flush_stdio_in_child();
  return frame.write_to(fd) ? 0 : child_error::undelivered_exit_code;
}

/// Hands `sink` the frame of the exception being handled. Precondition:
/// called inside a catch handler. Out of line, so its 1.3 KiB frame is on the
/// stack only when a callable threw.
template <class Sink>
FORKSAFE_NOINLINE auto sink_current_exception(Sink& sink) noexcept {
  frame_writer<child_error::max_type_name_length + child_error::max_what_length> frame;
  frame.set_current_exception();
  return sink(frame);
}

/// Where a child puts a wire form too large for its frame: `reserve(n)`
/// returns n writable bytes, wire_alignment-aligned (or throws
/// std::system_error), `commit()` hands them over once written.
/// `ends_process`: the process ends right after delivering (fork_call's
/// child), so the value itself need not be destroyed.
template <class Store>
concept large_value_store = requires(Store& s, std::size_t n) {
  { s.reserve(n) } -> std::same_as<unsigned char*>;
  s.commit();
  { Store::ends_process } -> std::convertible_to<bool>;
};

/// Hands `sink` a frame holding the `n`-byte wire form of `value`. Out of
/// line, with room for `Capacity` bytes, so a small value's frame (a short
/// string) does not make the child touch (and copy on write) a kilobyte of
/// stack.
template <std::size_t Capacity, class T, class Sink>
FORKSAFE_NOINLINE auto sink_wire_inline(const T& value, std::size_t n, Sink& sink) {
  frame_writer<Capacity> frame;
  write_wire(static_cast<unsigned char*>(frame.value_slot()), value);
  frame.set_value(n);
  return sink(frame);
}

/// Hands `sink` the frame for the wire form of `value`: inline if it fits,
/// else written into the store, the frame naming its size.
template <std::size_t N, class T, class Store, class Sink>
auto sink_wire_form(frame_writer<N>& frame, const T& value, Store& store, Sink& sink) {
  const std::size_t n = wire_size(value);
  if (n <= 192) return sink_wire_inline<192>(value, n, sink);
  if (n <= inline_result_limit) return sink_wire_inline<inline_result_limit>(value, n, sink);
  write_wire(store.reserve(n), value);
  store.commit();
  frame.set_value_in_memfd(n);
  return sink(frame);
}

/// Runs the call under a catch-all and hands `sink` the outcome's frame: the
/// value built in place (in the frame, or in `region` for a large T that
/// crosses as bytes), its wire form (in the frame, or in the store), or what
/// was thrown. Never unwinds. Shared by fork_call's child and process_pool's
/// workers.
template <class T, class Call, class Store, class Sink>
auto produce_frame(Call& call, void* region, std::size_t region_size, Store& store, Sink&& sink) noexcept {
  frame_writer<value_payload_capacity<T>()> frame;
  try {
    if constexpr (std::is_void_v<T>) {
      call();
      frame.set_value(0);
    } else if constexpr (needs_wire_form<T>) {
      static_assert(large_value_store<Store>);
      if constexpr (Store::ends_process) {
        // Never destroyed: the process ends with _exit once the frame is out,
        // and freeing a million strings first would only delay the parent.
        alignas(T) unsigned char kept[sizeof(T)]; // NOLINT(modernize-avoid-c-arrays): raw storage
        return sink_wire_form(frame, *::new (static_cast<void*>(kept)) T(call()), store, sink);
      } else {
        const T value = call();
        return sink_wire_form(frame, value, store, sink);
      }
    } else if constexpr (stored_in_region<T>()) {
      populate_for_writing(region, region_size);
      ::new (region) T(call()); // guaranteed elision: the callable's result is built here
      frame.set_value_in_region();
    } else {
      ::new (frame.value_slot()) T(call());
      frame.set_value(sizeof(T));
    }
  }
#if defined(__GLIBCXX__)
  catch (abi::__forced_unwind&) {
    // pthread_exit() or cancellation in the child: unwinding must not leave
    // fork_call. End here, without a result; not rethrowing is fine, since
    // this handler never completes.
    flush_stdio_in_child();
    ::_exit(0);
  }
#endif
  catch (...) {
    return sink_current_exception(sink);
  }
  return sink(frame);
}

/// The child's whole life after fork(): produce the frame, flush, write it
/// to the pipe. Returns the exit code child_process::spawn passes to _exit.
template <class T, class Call, class Store>
int run_call(Call& call, void* region, std::size_t region_size, Store& store, int fd) noexcept {
  const auto self = owner_process::current();
  return produce_frame<T>(call, region, region_size, store,
                          [self, fd](auto& frame) noexcept { return deliver(frame, self, fd); });
}

// ---- the parent's side --------------------------------------------------------

/// Reads what is in the (non-blocking) result pipe without waiting; sets
/// `eof` when every write end is closed.
inline std::size_t read_available(int fd, unsigned char* buf, std::size_t capacity, bool& eof) noexcept {
  std::size_t n = 0;
  while (n < capacity) {
    const ssize_t got = ::read(fd, buf + n, capacity - n);
    if (got > 0) {
      n += static_cast<std::size_t>(got);
    } else if (got == 0) {
      eof = true;
      break;
    } else if (errno != EINTR) {
      break; // EAGAIN: nothing more yet
    }
  }
  return n;
}

/// "St13runtime_error" -> "std::runtime_error"; the input if it cannot.
inline std::string demangle(const std::string& mangled) {
#if FORKSAFE_HAS_CXXABI
  int status = 0;
  char* out = abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status);
  if (status == 0 && out != nullptr) {
    std::string name(out);
    std::free(out);
    return name;
  }
  std::free(out);
#endif
  return mangled;
}

/// What a frame said, once checked against what arrived: never trusted
/// further than its bytes (a garbled, cut or oversized frame is `none`).
struct frame_view {
  frame_kind kind{};
  bool valid = false;
  const unsigned char* payload = nullptr;
  std::size_t size = 0;      ///< payload bytes
  std::size_t type_size = 0; ///< threw: bytes of the mangled type name at the start of the payload
  bool what_truncated = false;
};

/// What a frame must say to be a value of the expected type.
struct frame_expectation {
  std::size_t value_size = 0; ///< a value that crosses as bytes, inline: its size (0 for void)
  bool in_region = false;     ///< one built in the shared mapping
  bool wire = false;          ///< one sent in its wire form: inline (at most inline_result_limit) or in a memfd

  template <class T>
  static constexpr frame_expectation of() noexcept {
    frame_expectation e;
    if constexpr (needs_wire_form<T>) {
      e.wire = true;
    } else if constexpr (stored_in_region<T>()) {
      e.in_region = true;
    } else if constexpr (!std::is_void_v<T>) {
      e.value_size = sizeof(T);
    }
    return e;
  }
};

/// Checks `n` bytes at `buf` as a frame for the value `expected`.
inline frame_view read_frame(const unsigned char* buf, std::size_t n, const frame_expectation& expected) noexcept {
  frame_view v;
  if (n < frame_payload_offset) return v;
  frame_header h;
  std::memcpy(&h, buf, sizeof h);
  if (h.magic != frame_magic || n != frame_payload_offset + h.size) return v;
  v.kind = h.kind;
  v.payload = buf + frame_payload_offset;
  v.size = h.size;
  switch (h.kind) {
  case frame_kind::value:
    v.valid = expected.wire ? h.size <= inline_result_limit : !expected.in_region && h.size == expected.value_size;
    break;
  case frame_kind::value_in_region: v.valid = expected.in_region && h.size == 0; break;
  case frame_kind::value_in_memfd: v.valid = expected.wire && h.size == sizeof(std::uint64_t); break;
  case frame_kind::threw:
    v.type_size = h.type_size;
    v.what_truncated = (h.flags & frame_what_truncated) != 0;
    v.valid = h.type_size <= child_error::max_type_name_length && h.size >= h.type_size &&
              h.size - h.type_size <= child_error::max_what_length;
    break;
  }
  return v;
}

/// The child_error a valid `threw` frame describes, for the child `pid`.
inline child_error error_from_frame(const frame_view& v, pid_t pid) {
  child_error::details d;
  d.why = child_error::reason::threw;
  d.pid = pid;
  d.exception_type = demangle(std::string(reinterpret_cast<const char*>(v.payload), v.type_size));
  d.exception_what.assign(reinterpret_cast<const char*>(v.payload) + v.type_size, v.size - v.type_size);
  d.what_truncated = v.what_truncated;
  return child_error(std::move(d));
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_RESULT_FRAME_HPP
