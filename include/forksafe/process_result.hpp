// SPDX-License-Identifier: MIT
//
// forksafe/process_result.hpp: run a callable in a forked child and get its
// value back, or a precise error saying how the child ended.
//
// Defines:
//   enable_trivially_serializable<T>  customisation point: opt a type in or out
//   trivially_serializable<T>         concept: a type whose bytes are its value
//   fork_options                      a timeout and a process group for one call
//   child_error                       how a child ended without delivering a value
//   process_result<T>                 the move-only handle on the child and its result
//   fork_call(f, args...)             forks; the child runs std::invoke(f, args...)
//
// Only a value whose bytes are the value can cross a process boundary, and
// fork_call checks that at compile time: a callable that returns a
// std::string, a future or a lock is rejected with a diagnostic naming
// trivially_serializable, where Python's ProcessPoolExecutor fails at run
// time ("can't pickle _thread.RLock objects"). Everything that can go wrong
// at run time reaches the parent as a child_error or a std::system_error:
// never a hang, a zombie or a leaked descriptor.
//
// How a result travels. Before fork() the parent makes a pipe (O_CLOEXEC)
// and, for a result larger than 1 KiB (detail::inline_result_limit) or
// aligned to more than 64 bytes, a shared anonymous mapping. The child
// constructs a large result in place in the mapping (guaranteed copy
// elision: no copy of it on any stack), then writes one frame of at most
// PIPE_BUF bytes to the pipe: the small value itself, "the value is in the
// mapping", or the exception's type and what().
// A write of at most PIPE_BUF bytes is atomic and always fits in the empty
// pipe, so the child never blocks on a full pipe. The frame is written
// before the child exits, so success never depends on waitpid(): with
// SIGCHLD ignored, or a handler that reaps every child with waitpid(-1), the
// value still arrives, and a child that ended without a frame is reported as
// "result lost", not waited for.
//
// How the parent waits. On the child's pidfd (Linux 5.3+), which turns
// readable when the child ends; the pipe is read then. Nothing waits for EOF,
// so a copy of a write end that another call's child (or this child's own
// child) inherited cannot delay a result. Without a pidfd, the parent polls
// waitid() with a bounded backoff and also wakes when the frame arrives. All
// of it is detail::child_process, forksafe's one "fork, run, report"
// primitive; fork() is the plain one, so handlers registered with
// atfork_registry run around it.

#ifndef FORKSAFE_PROCESS_RESULT_HPP
#define FORKSAFE_PROCESS_RESULT_HPP

#include "detail/child_process.hpp"
#include "detail/config.hpp"

#include <algorithm>    // std::min, std::max
#include <array>        // std::array: serialisable when its element is
#include <atomic>       // a pool task's pid, set by the pool's threads
#include <cerrno>       // errno, EINTR, EAGAIN
#include <chrono>       // timeouts and deadlines
#include <climits>      // PIPE_BUF: the largest atomic pipe write
#include <concepts>     // std::invocable
#include <csignal>      // SIGKILL
#include <cstddef>      // std::size_t
#include <cstdint>      // the frame's fixed-width fields
#include <cstdlib>      // std::free: __cxa_demangle's buffer
#include <cstring>      // std::memcpy, strnlen
#include <exception>    // std::exception: what() of what the child threw
#include <functional>   // std::invoke; std::reference_wrapper is rejected
#include <future>       // std::future_status, std::future_error
#include <memory>       // std::shared_ptr: child_error copies without throwing
#include <new>          // placement new, std::launder
#include <optional>     // fork_options::timeout; std::optional is recognised
#include <span>         // std::span is rejected
#include <stdexcept>    // std::runtime_error
#include <string>       // child_error's texts
#include <string_view>  // std::basic_string_view is rejected
#include <system_error> // std::system_error: the child could not be started
#include <tuple>        // std::tuple is recognised
#include <type_traits>  // the rules of trivially_serializable
#include <typeinfo>     // std::type_info: the type of what the child threw
#include <utility>      // std::pair is recognised; std::exchange, std::forward
#include <variant>      // std::variant is recognised

#include <fcntl.h>     // O_CLOEXEC, O_NONBLOCK
#include <poll.h>      // poll: the child waits out a full pipe
#include <pthread.h>   // pthread_mutex_t, pthread_cond_t, pthread_rwlock_t are opted out
#include <semaphore.h> // sem_t is opted out
#include <sys/mman.h>  // mmap, munmap, madvise: the shared result region
#include <unistd.h>    // pipe2, read, write, close, getpid, sysconf

#if defined(__has_include)
#if __has_include(<cxxabi.h>)
#include <cxxabi.h> // abi::__cxa_current_exception_type, abi::__cxa_demangle
#define FORKSAFE_HAS_CXXABI 1
#endif
#endif
#ifndef FORKSAFE_HAS_CXXABI
#define FORKSAFE_HAS_CXXABI 0
#endif

namespace forksafe {

template <class T>
class process_result;

namespace detail {
template <class T>
struct serializable_by_default;
struct result_access;
} // namespace detail

// ---------------------------------------------------------------------------
// What may cross the process boundary
// ---------------------------------------------------------------------------

/// Customisation point, in the spirit of std::ranges::enable_borrowed_range:
/// whether the bytes of a T are its value, so a T built in a child means the
/// same in its parent. Specialise it for a cv-unqualified type of yours:
///
///     template <> inline constexpr bool forksafe::enable_trivially_serializable<my_handle> = false;
///
/// Opt out a type the default accepts but whose bytes are not its value: a
/// struct holding a pointer, a file descriptor, a thread id, a lock. Opt in a
/// type the default rejects although its bytes are its value (a struct with a
/// std::pair member is not trivially copyable under libstdc++); opting in is
/// a promise, and the type must still be copy-constructible and trivially
/// destructible (trivially_serializable checks both).
///
/// The default (detail::serializable_by_default): trivially copyable, really
/// copy-constructible (GCC and Clang call std::mutex and std::atomic<int>
/// trivially copyable although their copies are deleted), trivially
/// destructible, and neither a pointer, a member pointer, a C array,
/// std::basic_string_view, std::span nor std::reference_wrapper. std::pair,
/// std::tuple, std::array, std::optional and std::variant are accepted when
/// every member is trivially_serializable (recursively, so a user's opt-out
/// reaches into them). A pointer inside a user's struct cannot be seen:
/// opt such a struct out. forksafe opts out pthread_mutex_t, pthread_cond_t,
/// pthread_rwlock_t and sem_t.
template <class T>
inline constexpr bool enable_trivially_serializable = detail::serializable_by_default<T>::value;

/// A type whose bytes are its value: what fork_call may return from a child.
/// enable_trivially_serializable<remove_cv_t<T>> decides, and T must in any
/// case be an object type (not a reference, a function or void), copy-
/// constructible and trivially destructible. Checked at compile time only.
template <class T>
concept trivially_serializable = std::is_object_v<T> && enable_trivially_serializable<std::remove_cv_t<T>> &&
                                 std::is_copy_constructible_v<T> && std::is_trivially_destructible_v<T>;

template <>
inline constexpr bool enable_trivially_serializable<pthread_mutex_t> = false;
template <>
inline constexpr bool enable_trivially_serializable<pthread_cond_t> = false;
template <>
inline constexpr bool enable_trivially_serializable<pthread_rwlock_t> = false;
template <>
inline constexpr bool enable_trivially_serializable<sem_t> = false;

namespace detail {

template <class T>
struct serializable_by_default
    : std::bool_constant<std::is_trivially_copyable_v<T> && std::is_copy_constructible_v<T> &&
                         std::is_trivially_destructible_v<T> && !std::is_pointer_v<T> &&
                         !std::is_member_pointer_v<T> && !std::is_array_v<T>> {};

// Views: trivially copyable, but their bytes are an address in the child.
template <class C, class Traits>
struct serializable_by_default<std::basic_string_view<C, Traits>> : std::false_type {};
template <class E, std::size_t N>
struct serializable_by_default<std::span<E, N>> : std::false_type {};
template <class U>
struct serializable_by_default<std::reference_wrapper<U>> : std::false_type {};

// Products and sums: their bytes are their members' bytes plus a
// discriminator, although libstdc++ makes pair and tuple not trivially
// copyable (their assignment operators are user-provided).
template <class A, class B>
struct serializable_by_default<std::pair<A, B>>
    : std::bool_constant<trivially_serializable<A> && trivially_serializable<B>> {};
template <class... Ts>
struct serializable_by_default<std::tuple<Ts...>>
    : std::bool_constant<(trivially_serializable<Ts> && ...)> {};
template <class U, std::size_t N>
struct serializable_by_default<std::array<U, N>> : std::bool_constant<trivially_serializable<U>> {};
template <class U>
struct serializable_by_default<std::optional<U>> : std::bool_constant<trivially_serializable<U>> {};
template <class... Ts>
struct serializable_by_default<std::variant<Ts...>>
    : std::bool_constant<(trivially_serializable<Ts> && ...)> {};

// What fork_call transports for a call returning R: void travels as an empty
// frame, so the constraint can name trivially_serializable directly and the
// compiler's diagnostic says which type failed it.
struct void_result {};
template <class R>
using transported_t = std::conditional_t<std::is_void_v<R>, void_result, std::remove_cv_t<R>>;

template <class F, class... Args>
using call_result_t = std::remove_cv_t<std::invoke_result_t<F, Args...>>;

} // namespace detail

// ---------------------------------------------------------------------------
// Options and errors
// ---------------------------------------------------------------------------

/// Options for one fork_call. An aggregate: name what you set,
/// `fork_call({.timeout = 2s, .own_process_group = true}, f)`.
struct fork_options {
  /// How long the whole call may take, counted from fork_call: preparing the
  /// fork (the registry's handlers, which may wait for locks other threads
  /// hold) and the child's run. If the preparation is not done by then,
  /// nothing is forked and get() throws child_error with prepare_timed_out().
  /// Otherwise, once it has passed, the child is killed with SIGKILL (its
  /// whole process group, with own_process_group) and reaped, and get()
  /// throws child_error with timed_out() (what() says how long the child ran
  /// and how long its fork waited first); a value the child delivered before
  /// it was killed still wins. Empty: no limit (the registry's prepare
  /// timeout still bounds the preparation). Zero or negative: the child is
  /// killed at the first wait. forksafe starts no thread: the timeout is enforced by the
  /// handle's waiting and polling members (get, wait, wait_for, wait_until,
  /// ready) and its destructor kills regardless, so a caller that waits on
  /// process_result::native_handle() should wake at deadline() and call ready().
  std::optional<std::chrono::nanoseconds> timeout{};
  /// Start the child in a new process group (setpgid), so that the timeout,
  /// kill() and the destructor's SIGKILL also reach every descendant that
  /// stays in it. Descendants of a child that ends normally keep running.
  bool own_process_group = false;
};

/// How a child ended without delivering a value; thrown by
/// process_result::get(). Copying never throws (the texts are shared).
///
/// | why()     | the child...                                            | accessors                  |
/// |-----------|---------------------------------------------------------|----------------------------|
/// | exited    | ended with exit code N without a result (_exit, exit)   | exit_code()                |
/// | signaled  | was killed by a signal forksafe did not send for a      | signal_number(),           |
/// |           | timeout (a crash, kill(), the OOM killer)               | signal_name()              |
/// | threw     | let an exception escape the callable                    | exception_type(),          |
/// |           |                                                         | exception_what(),          |
/// |           |                                                         | what_truncated()           |
/// | timed_out | ran past fork_options::timeout; forksafe killed it      | signal_number() (SIGKILL)  |
/// | lost      | ended without a result and was reaped by someone else   | none                       |
/// |           | (SIGCHLD ignored, a foreign waitpid), so how is unknown |                            |
/// | prepare_  | was never forked: the fork could not be prepared within | blocker(); pid() is -1     |
/// | timed_out | the timeout (another thread held a lock the fork waits  |                            |
/// |           | for); fork_options::timeout counts from the call        |                            |
/// | cancelled | was never run: a pool task still queued when the pool   | pid() is -1                |
/// |           | shut down past its deadline                             |                            |
///
/// what() reads "child 4242 was killed by SIGSEGV", "child 4242 exited with
/// code 3 without a result", "child 4242 threw std::runtime_error: boom",
/// "child 4242 timed out after running 480 ms and was killed by SIGKILL",
/// "child 4242 ended without a result and was reaped by someone else
/// (SIGCHLD ignored or a foreign waitpid)", "no child was forked: the fork
/// could not be prepared within 500 ms; held back by ..." or "the task never
/// ran: it was still queued when the pool shut down".
class child_error : public std::runtime_error {
public:
  /// The way the child ended; see the table above.
  enum class reason : unsigned char { exited, signaled, threw, timed_out, lost, prepare_timed_out, cancelled };

  /// exception_what() keeps at most this many bytes of what(), cut at a UTF-8
  /// character boundary; what_truncated() says whether it was cut.
  static constexpr std::size_t max_what_length = 1024;
  /// The exception's type travels as its mangled name, cut to this many bytes
  /// (a longer one is shown cut and mangled), and is demangled in the parent.
  static constexpr std::size_t max_type_name_length = 256;
  /// The exit code of a child that could not write its result (the callable
  /// closed the result descriptor, say), or of a process_pool worker that
  /// could not map a large result's memory: reported as exited() with it.
  static constexpr int undelivered_exit_code = 126;

  /// Everything a child_error carries; forksafe fills it in.
  struct details {
    reason why = reason::lost;
    pid_t pid = -1;
    int value = 0; ///< exit code (exited) or signal number (signaled, timed_out)
    std::string exception_type{};
    std::string exception_what{};
    bool what_truncated = false;
    /// prepare_timed_out: what held the fork back (the registry's report).
    std::string blocker{};
    /// timed_out: how long the child ran before it was killed, and how long
    /// the fork waited to be prepared before it (both count toward the
    /// timeout); negative when unknown.
    std::chrono::nanoseconds ran_for{-1};
    std::chrono::nanoseconds prepare_time{-1};
  };

  /// Builds the error and its what() sentence. Public so that code wrapping
  /// forksafe (and its tests) can make one; forksafe itself is the usual source.
  /// Throws std::bad_alloc.
  explicit child_error(details d)
      : std::runtime_error(describe(d)), details_(std::make_shared<const details>(std::move(d))) {}

  /// How the child ended; the predicates below test one reason each.
  [[nodiscard]] reason why() const noexcept { return details_->why; }
  /// The child's process id; for a process_pool task, its worker's. Do not
  /// signal it: the process may have been reaped and the number reused, or
  /// (a worker whose task threw) it may be running other tasks.
  [[nodiscard]] pid_t pid() const noexcept { return details_->pid; }

  [[nodiscard]] bool exited() const noexcept { return why() == reason::exited; }
  [[nodiscard]] bool signaled() const noexcept { return why() == reason::signaled; }
  [[nodiscard]] bool threw() const noexcept { return why() == reason::threw; }
  [[nodiscard]] bool timed_out() const noexcept { return why() == reason::timed_out; }
  [[nodiscard]] bool lost() const noexcept { return why() == reason::lost; }
  [[nodiscard]] bool prepare_timed_out() const noexcept { return why() == reason::prepare_timed_out; }
  [[nodiscard]] bool cancelled() const noexcept { return why() == reason::cancelled; }

  /// prepare_timed_out(): what held the fork back (names of registry
  /// entries, a quiesce lock's address and holder); "" otherwise.
  [[nodiscard]] const std::string& blocker() const noexcept { return details_->blocker; }

  /// The exit code when exited(), else -1.
  [[nodiscard]] int exit_code() const noexcept { return exited() ? details_->value : -1; }
  /// The signal that killed the child when signaled() or timed_out(), else 0.
  [[nodiscard]] int signal_number() const noexcept {
    return signaled() || timed_out() ? details_->value : 0;
  }
  /// "SIGSEGV" for signal_number(), or "" when no signal killed the child.
  [[nodiscard]] std::string signal_name() const {
    return signal_number() != 0 ? detail::signal_name(signal_number()) : std::string();
  }
  /// The demangled type of what the child threw ("std::runtime_error"), when
  /// threw(); "" otherwise, or where the C++ ABI cannot name it.
  [[nodiscard]] const std::string& exception_type() const noexcept { return details_->exception_type; }
  /// Its what() when it was a std::exception, at most max_what_length bytes;
  /// "" otherwise.
  [[nodiscard]] const std::string& exception_what() const noexcept { return details_->exception_what; }
  /// Whether exception_what() was cut to max_what_length.
  [[nodiscard]] bool what_truncated() const noexcept { return details_->what_truncated; }

private:
  static std::string describe(const details& d) {
    std::string s = "child " + std::to_string(d.pid);
    switch (d.why) {
    case reason::exited: return s + " exited with code " + std::to_string(d.value) + " without a result";
    case reason::signaled: return s + " was killed by " + detail::signal_name(d.value);
    case reason::threw:
      s += " threw ";
      s += d.exception_type.empty() ? std::string("an exception") : d.exception_type;
      if (!d.exception_what.empty()) s += ": " + d.exception_what;
      if (d.what_truncated) s += " [truncated]";
      return s;
    case reason::timed_out:
      s += " timed out";
      if (d.ran_for.count() >= 0) s += " after running " + std::to_string(d.ran_for.count() / 1'000'000) + " ms";
      if (d.prepare_time.count() >= 1'000'000) {
        s += " (its fork waited " + std::to_string(d.prepare_time.count() / 1'000'000) + " ms to be prepared first)";
      }
      return s + " and was killed by " + detail::signal_name(d.value);
    case reason::prepare_timed_out:
      return "no child was forked: " + (d.blocker.empty() ? std::string("the fork could not be prepared in time")
                                                           : d.blocker);
    case reason::cancelled: return "the task never ran: it was still queued when the pool shut down";
    case reason::lost:
      return s + " ended without a result and was reaped by someone else"
                 " (SIGCHLD ignored or a foreign waitpid)";
    }
    return s + " ended in an unknown way";
  }

  std::shared_ptr<const details> details_;
};

// ---------------------------------------------------------------------------
// Internals: descriptors, the shared region, the result frame
// ---------------------------------------------------------------------------

namespace detail {

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
enum class frame_kind : std::uint32_t { value = 1, value_in_region = 2, threw = 3 };
struct frame_header {
  std::uint32_t magic;
  frame_kind kind;
  std::uint32_t size;      ///< payload bytes
  std::uint32_t type_size; ///< threw: bytes of the type name at the start of the payload
  std::uint32_t flags;     ///< threw: frame_what_truncated
};
inline constexpr std::size_t frame_capacity =
    frame_payload_offset + std::max(inline_result_limit,
                                    child_error::max_type_name_length + child_error::max_what_length);
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
  if constexpr (std::is_void_v<T>) {
    return false;
  } else {
    return sizeof(T) > inline_result_limit || alignof(T) > frame_payload_offset;
  }
}

/// An owned file descriptor. Move-only.
class unique_fd {
public:
  unique_fd() noexcept = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  unique_fd(const unique_fd&) = delete; // one owner closes
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  /// Closes the descriptor. close() is not retried on EINTR: Linux releases
  /// the descriptor even then, and a retry could close a reused number.
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

private:
  int fd_ = -1;
};

/// Makes the result pipe, both ends close-on-exec and non-blocking. Throws
/// std::system_error with errno (EMFILE, ENFILE) and then holds nothing.
inline void make_result_pipe(unique_fd& read_end, unique_fd& write_end) {
  int fds[2];
#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__)
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw_errno(errno, "forksafe: fork_call could not create its result pipe (pipe2)");
  }
#else
  // No pipe2: another thread's exec() may inherit these between the calls.
  if (::pipe(fds) != 0) throw_errno(errno, "forksafe: fork_call could not create its result pipe (pipe)");
  for (int fd : fds) {
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
#endif
  read_end = unique_fd(fds[0]);
  write_end = unique_fd(fds[1]);
}

/// A shared anonymous mapping, made before fork() so parent and child see
/// the same pages. Move-only. In a process forked from the one that made it,
/// destroying an inherited copy does not unmap (the range may not be mapped
/// there, or may hold something else by then).
class shared_region {
public:
  shared_region() noexcept = default;
  /// Maps at least `bytes`, rounded up to whole pages. Throws std::system_error
  /// with errno (ENOMEM under RLIMIT_AS, say) and then holds nothing.
  explicit shared_region(std::size_t bytes) {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t size = (bytes + page - 1) / page * page;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      throw std::system_error(err, std::generic_category(),
                              "forksafe: fork_call could not map " + std::to_string(size) +
                                  " bytes of shared memory for its result (mmap)");
    }
    data_ = p;
    size_ = size;
    owner_ = ::getpid();
  }
  /// Maps `bytes` of the file `fd` (a memfd) shared, and keeps `fd` so it can
  /// be passed to a process forked earlier (process_pool's workers). Takes
  /// ownership of `fd`. Throws std::system_error with errno.
  static shared_region adopt_fd(int fd, std::size_t bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw std::system_error(err, std::generic_category(),
                              "forksafe: could not map " + std::to_string(bytes) + " bytes of a result memfd (mmap)");
    }
    shared_region r;
    r.data_ = p;
    r.size_ = bytes;
    r.owner_ = ::getpid();
    r.fd_ = fd;
    return r;
  }
  shared_region(shared_region&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)),
        owner_(other.owner_), fd_(std::exchange(other.fd_, -1)) {}
  shared_region& operator=(shared_region&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      owner_ = other.owner_;
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  shared_region(const shared_region&) = delete; // one owner unmaps
  shared_region& operator=(const shared_region&) = delete;
  ~shared_region() { reset(); }

  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// The memfd behind an adopt_fd region, or -1.
  [[nodiscard]] int fd() const noexcept { return fd_; }

  /// After the fork that needs it: later forks (other calls, other threads)
  /// do not inherit the region, so it is freed when this handle lets go of
  /// it, not when the last unrelated child exits. Best effort.
  void keep_out_of_later_forks() const noexcept {
#if defined(MADV_DONTFORK)
    if (data_ != nullptr) ::madvise(data_, size_, MADV_DONTFORK);
#endif
  }

  void reset() noexcept {
    if (data_ != nullptr && ::getpid() == owner_) ::munmap(data_, size_);
    if (fd_ >= 0) ::close(fd_);
    data_ = nullptr;
    size_ = 0;
    fd_ = -1;
  }

private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
  pid_t owner_ = -1;
  int fd_ = -1;
};

/// In the child: fault a region's pages in with one system call before a
/// large result is built there, instead of one page fault per page. Best
/// effort (Linux 5.14+).
inline void populate_for_writing(void* data, std::size_t size) noexcept {
#if defined(MADV_POPULATE_WRITE)
  ::madvise(data, size, MADV_POPULATE_WRITE);
#else
  (void)data;
  (void)size;
#endif
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
    const frame_header h{frame_magic, kind, static_cast<std::uint32_t>(size),
                         static_cast<std::uint32_t>(type_size), flags};
    std::memcpy(buffer_, &h, sizeof h);
    size_ = frame_payload_offset + size;
  }

  alignas(frame_payload_offset) unsigned char buffer_[frame_payload_offset + PayloadCapacity];
  std::size_t size_ = 0;
};

/// The payload room a value of type T needs in its frame: itself when it
/// travels inline, nothing otherwise.
template <class T>
consteval std::size_t value_payload_capacity() {
  if constexpr (std::is_void_v<T> || stored_in_region<T>()) {
    return 0;
  } else {
    return sizeof(T);
  }
}

/// Unless this is a process the callable forked, which came back into
/// fork_call (only the child reports): flush, write the frame. Returns the
/// exit code.
template <std::size_t N>
int deliver(frame_writer<N>& frame, pid_t self, int fd) noexcept {
  if (::getpid() != self) return 0;
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

/// The child_error for a child that delivered no frame and ended as `status`.
/// `killed_for_timeout`: forksafe killed it because its timeout passed,
/// after it ran for `ran_for`, its fork having waited `prepare_time` to be
/// prepared (negative: unknown).
inline child_error error_from_status(pid_t pid, const child_status& status, bool killed_for_timeout,
                                     std::chrono::nanoseconds ran_for = std::chrono::nanoseconds(-1),
                                     std::chrono::nanoseconds prepare_time = std::chrono::nanoseconds(-1)) {
  using kind = child_status::kind;
  child_error::details d;
  d.pid = pid;
  d.value = status.value;
  if (killed_for_timeout) {
    d.ran_for = ran_for;
    d.prepare_time = prepare_time;
  }
  switch (status.how) {
  case kind::exited: d.why = child_error::reason::exited; break;
  case kind::signaled:
    d.why = killed_for_timeout && status.value == SIGKILL ? child_error::reason::timed_out
                                                           : child_error::reason::signaled;
    break;
  case kind::timed_out: d.why = child_error::reason::timed_out; break;
  case kind::lost:
  case kind::running:
    // Reaped elsewhere: how it ended is unknown, unless forksafe killed it.
    d.why = killed_for_timeout ? child_error::reason::timed_out : child_error::reason::lost;
    d.value = killed_for_timeout ? SIGKILL : 0;
    break;
  }
  return child_error(std::move(d));
}

/// steady_clock::now() + d, saturating at time_point::max(); d <= 0: now.
template <class Rep, class Period>
std::chrono::steady_clock::time_point deadline_after(std::chrono::steady_clock::time_point start,
                                                     std::chrono::duration<Rep, Period> d) {
  using clock = std::chrono::steady_clock;
  if (d <= d.zero()) return start;
  const auto room = clock::time_point::max() - start;
  // Compared in long double, so a huge d (hours::max()) cannot overflow.
  if (std::chrono::duration<long double>(d) >= std::chrono::duration<long double>(room)) {
    return clock::time_point::max();
  }
  return start + std::chrono::ceil<clock::duration>(d);
}

/// Runs the call under a catch-all and hands `sink` the outcome's frame: the
/// value built in place (in the frame, or in `region` for a large T), or
/// what was thrown. Never unwinds. Shared by fork_call's child and
/// process_pool's workers.
template <class T, class Call, class Sink>
auto produce_frame(Call& call, void* region, std::size_t region_size, Sink&& sink) noexcept {
  frame_writer<value_payload_capacity<T>()> frame;
  try {
    if constexpr (std::is_void_v<T>) {
      call();
      frame.set_value(0);
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
template <class T, class Call>
int run_call(Call& call, void* region, std::size_t region_size, int fd) noexcept {
  const pid_t self = ::getpid();
  return produce_frame<T>(call, region, region_size,
                          [self, fd](auto& frame) noexcept { return deliver(frame, self, fd); });
}

/// A result produced elsewhere than by fork_call's own child (a
/// process_pool task): process_result waits through it, then reads the
/// outcome it holds.
struct remote_result {
  remote_result() = default;
  remote_result(const remote_result&) = delete;
  remote_result& operator=(const remote_result&) = delete;
  virtual ~remote_result() = default;
  /// Waits until the outcome is known or `until` passes; true if known.
  virtual bool wait(std::chrono::steady_clock::time_point until) = 0;
  /// A descriptor that turns readable once the outcome is known.
  virtual int native_handle() = 0;
  /// Signals the process running it, while it runs.
  virtual void kill(int sig) = 0;

  // The outcome, read once wait() returned true.
  std::array<unsigned char, frame_capacity> frame; // frame_size bytes are meaningful
  std::size_t frame_size = 0; // 0: no frame arrived; see status
  child_status status{};
  bool killed_for_timeout = false;
  std::chrono::nanoseconds ran_for{-1}; // killed_for_timeout: how long it ran in its worker
  bool cancelled = false;               // never ran (still queued when the pool shut down)
  std::atomic<pid_t> pid{-1}; // the process that runs or ran it (-1 while queued); set by the pool's threads
  shared_region region;
};

struct result_access {
  template <class T, class Call>
  static process_result<T> start(const fork_options& options, Call& call) {
    process_result<T> r;
    r.start(options, call);
    return r;
  }
  template <class T>
  static process_result<T> from_remote(std::shared_ptr<remote_result> remote) {
    process_result<T> r;
    r.remote_ = std::move(remote);
    r.state_ = process_result<T>::state::running;
    return r;
  }
};

template <class T>
struct inline_storage {
  alignas(T) unsigned char bytes[sizeof(T)];
};
struct no_storage {};

} // namespace detail

// ---------------------------------------------------------------------------
// process_result
// ---------------------------------------------------------------------------

/// The handle on one fork_call: the child process and, once it ended, its
/// value or the child_error that says how it ended. Move-only; made by
/// fork_call, and by process_pool::submit for a task run in a pool worker
/// (differences noted below and on each member).
///
/// What get() does, for each way a child can end:
///
/// | the child...                                          | get()                                         |
/// |-------------------------------------------------------|-----------------------------------------------|
/// | returned a value                                      | returns it (T& on an lvalue, T on an rvalue)  |
/// | returned, T = void                                    | returns                                       |
/// | delivered its value, then was reaped by someone else  | returns it                                    |
/// | threw                                                 | throws child_error: threw()                   |
/// | ended with _exit(N) / exit(N) without returning       | throws child_error: exited(), exit_code() N   |
/// | was killed by a signal (crash, kill(), OOM killer)    | throws child_error: signaled(), signal_name() |
/// | ran past fork_options::timeout                        | kills, reaps; throws child_error: timed_out() |
/// | ended without a result and was reaped by someone else | throws child_error: lost()                    |
/// | could not be started                                  | (fork_call threw std::system_error instead)   |
///
/// The outcome is known once the child has ended (its pidfd turned
/// readable); without a pidfd, also once its result frame arrived. A pool
/// task's outcome is known once its worker answered or ended (see
/// process_pool for its table). get() can be called again: it returns the
/// same value or throws the same error.
///
/// Destruction: a child that still runs is killed with SIGKILL (its process
/// group too, with own_process_group) and reaped; nothing is left as a zombie.
/// (Without a pidfd, that includes a child that delivered its result but had
/// not been seen to exit yet: it is past the callable, inside _exit.) A pool
/// task is not cancelled: it runs on (or stays queued) and the pool discards
/// its result.
///
/// Thread-safety: none; one thread at a time uses a handle (different
/// handles may be used by different threads at once).
///
/// In a forked child: an inherited copy refers to a process that is not the
/// forked child's child. Do not use it there; destroying it there (a child
/// that returns from main after a plain fork()) closes its descriptors and
/// neither signals, waits for, nor unmaps anything. fork_call's own children
/// end with _exit and destroy nothing.
template <class T>
class [[nodiscard]] process_result {
  static_assert(std::is_void_v<T> || trivially_serializable<T>,
                "process_result<T>: T must be void or satisfy forksafe::trivially_serializable (its bytes "
                "must be its value); see enable_trivially_serializable");
  static_assert(detail::result_alignment<T>() <= detail::max_result_alignment,
                "process_result<T>: T is aligned to more than a page (4096 bytes), which the shared result "
                "region cannot guarantee");
  static constexpr bool in_region = detail::stored_in_region<T>();
  static constexpr bool in_handle = !std::is_void_v<T> && !in_region;
  using storage_type = std::conditional_t<in_handle, detail::inline_storage<T>, detail::no_storage>;

public:
  /// The callable's result type, cv-unqualified; may be void.
  using value_type = T;

  /// An empty handle: valid() is false.
  process_result() noexcept = default;

  /// Takes over `other`'s child and outcome; `other` becomes !valid().
  process_result(process_result&& other) noexcept
      : result_fd_(std::move(other.result_fd_)), region_(std::move(other.region_)), storage_(other.storage_),
        error_(std::move(other.error_)), deadline_(other.deadline_),
        state_(std::exchange(other.state_, state::empty)), delivered_(other.delivered_),
        drained_(other.drained_), hung_up_(other.hung_up_), killed_for_timeout_(other.killed_for_timeout_),
        forked_at_(other.forked_at_), remote_(std::move(other.remote_)), child_(std::move(other.child_)) {}

  /// Takes over `other`'s child. A child this handle still had is killed and
  /// reaped first, as by the destructor (a pool task it had is dropped).
  process_result& operator=(process_result&& other) noexcept {
    if (this != &other) {
      child_ = std::move(other.child_); // kills and reaps the child this handle had
      result_fd_ = std::move(other.result_fd_);
      region_ = std::move(other.region_);
      storage_ = other.storage_;
      error_ = std::move(other.error_);
      deadline_ = other.deadline_;
      state_ = std::exchange(other.state_, state::empty);
      delivered_ = other.delivered_;
      drained_ = other.drained_;
      hung_up_ = other.hung_up_;
      killed_for_timeout_ = other.killed_for_timeout_;
      forked_at_ = other.forked_at_;
      remote_ = std::move(other.remote_);
    }
    return *this;
  }

  process_result(const process_result&) = delete; // one owner reaps the child
  process_result& operator=(const process_result&) = delete;

  /// Kills (SIGKILL) and reaps a child that still runs (blocking until the
  /// kernel has ended it); closes and unmaps. A pool task is dropped, not
  /// cancelled.
  ~process_result() = default;

  /// Waits as wait() does (no limit but the timeout), then returns a
  /// reference to the value, which lives in this handle (inline, or in the
  /// shared mapping for a large T: a 64 MiB result is never copied onto a
  /// stack) and stays valid until the handle is destroyed, assigned to or
  /// moved from. Throws child_error if the child delivered no value (see the
  /// table above), std::future_error(no_state) if !valid(), std::system_error
  /// if waiting itself failed (waitid with an errno other than EINTR/ECHILD).
  std::add_lvalue_reference_t<T> get() & {
    wait();
    if (state_ == state::failed) throw *error_;
    if constexpr (!std::is_void_v<T>) return *value_pointer();
  }

  /// As get() &, but returns the value itself: `fork_call(f).get()`. Refused
  /// at compile time for a T larger than 1 MiB, which would land on the
  /// caller's stack.
  T get() && {
    if constexpr (std::is_void_v<T>) {
      get();
    } else {
      static_assert(sizeof(T) <= detail::by_value_result_limit,
                    "process_result<T>::get() && returns T by value, on the caller's stack, and this T is "
                    "larger than 1 MiB: keep the process_result in a variable and use the reference that "
                    "get() returns on an lvalue");
      return std::move(get());
    }
  }

  /// Waits until the outcome is known (the child ended, or its timeout passed
  /// and it was killed and reaped; a pool task: its worker answered or
  /// ended). No limit but fork_options::timeout (pool_options::task_timeout).
  /// Does not throw the child's error; get() does. Throws
  /// std::future_error(no_state) if !valid(), std::system_error as get().
  void wait() {
    require_valid();
    (void)wait_steady(std::chrono::steady_clock::time_point::max());
  }

  /// Waits at most `d`: std::future_status::ready once the outcome is known,
  /// timeout otherwise (never deferred). EINTR is retried internally. Kills
  /// and reaps a child whose fork_options::timeout passed. Throws as wait().
  template <class Rep, class Period>
  std::future_status wait_for(const std::chrono::duration<Rep, Period>& d) {
    require_valid();
    const auto until = detail::deadline_after(std::chrono::steady_clock::now(), d);
    return wait_steady(until) ? std::future_status::ready : std::future_status::timeout;
  }

  /// Waits until `t` on `Clock` (re-read after every wake, so a clock that
  /// jumps is followed): ready or timeout. Otherwise as wait_for().
  template <class Clock, class Duration>
  std::future_status wait_until(const std::chrono::time_point<Clock, Duration>& t) {
    require_valid();
    for (;;) {
      const auto now = Clock::now();
      const auto left = now < t ? t - now : decltype(t - now)::zero();
      if (wait_steady(detail::deadline_after(std::chrono::steady_clock::now(), left))) {
        return std::future_status::ready;
      }
      if (Clock::now() >= t) return std::future_status::timeout;
    }
  }

  /// Whether the outcome is known, without blocking (beyond killing and
  /// reaping a child whose timeout has passed). Throws as wait().
  [[nodiscard]] bool ready() {
    require_valid();
    return wait_steady(std::chrono::steady_clock::time_point::min());
  }

  /// False for a default-constructed or moved-from handle.
  [[nodiscard]] bool valid() const noexcept { return state_ != state::empty; }

  /// The child's process id, or -1 if !valid(). Once the child was reaped the
  /// number may belong to another process: use kill() to signal the child.
  /// A pool task: its worker's pid, -1 while queued.
  [[nodiscard]] pid_t pid() const noexcept {
    if (!valid()) return -1;
    return remote_ ? remote_->pid.load(std::memory_order_relaxed) : child_.pid();
  }

  /// A descriptor that turns readable when the child is done, for poll/epoll:
  /// the child's pidfd, or, where none could be opened, the read end of the
  /// result pipe (readable once the result arrived; if the child dies without
  /// one, only at EOF, which a sibling holding a copy of the write end can
  /// delay: poll with a timeout and call ready()). A pool task: an eventfd,
  /// made on the first call (if it cannot be made, std::terminate: this is
  /// noexcept), readable once the outcome is known. Owned by the handle; -1
  /// if !valid(). Once it is readable, get() does not block.
  [[nodiscard]] int native_handle() const noexcept {
    if (!valid()) return -1;
    if (remote_) return remote_->native_handle();
    return child_.native_handle() >= 0 ? child_.native_handle() : result_fd_.get();
  }

  /// When the child's timeout expires (time_point::max() without one), for a
  /// caller that waits on native_handle() itself. Always time_point::max()
  /// for a pool task: the pool enforces pool_options::task_timeout itself.
  [[nodiscard]] std::chrono::steady_clock::time_point deadline() const noexcept { return deadline_; }

  /// Sends `sig` to the child (and its process group, with own_process_group)
  /// while it runs; does nothing once the outcome is known, so a reused pid is
  /// never signalled. A child killed this way is reported as signaled(),
  /// unless it had already delivered its value. A pool task: signals its
  /// worker while the task runs there (a killed worker is replaced); does
  /// nothing while the task is queued.
  void kill(int sig = SIGKILL) noexcept {
    if (state_ != state::running) return;
    if (remote_) {
      remote_->kill(sig);
    } else {
      child_.kill(sig);
    }
  }

private:
  friend struct detail::result_access;
  enum class state : unsigned char { empty, running, has_value, failed };
  enum class delivery : unsigned char { none, value, threw };

  template <class Call>
  void start(const fork_options& options, Call& call) {
    detail::unique_fd read_end;
    detail::unique_fd write_end;
    detail::make_result_pipe(read_end, write_end);
    if constexpr (in_region) region_ = detail::shared_region(sizeof(T));
    const auto started = std::chrono::steady_clock::now();
    void* const region = region_.data();
    const std::size_t region_size = region_.size();
    const int fd = write_end.get();
    detail::spawn_options spawn;
    spawn.own_process_group = options.own_process_group;
    const auto in_child = [&call, region, region_size, fd]() noexcept {
      return detail::run_call<T>(call, region, region_size, fd);
    };
    deadline_ = options.timeout ? detail::deadline_after(started, *options.timeout)
                                : std::chrono::steady_clock::time_point::max();
    // The timeout bounds the whole call: the fork's preparation too. If that
    // runs out first, nothing is forked and the outcome says so.
    spawn.prepare_deadline = deadline_;
    try {
      child_ = detail::child_process::spawn(in_child, spawn);
    } catch (const detail::fork_unprepared& e) {
      region_.reset();
      child_error::details d;
      d.why = child_error::reason::prepare_timed_out;
      char text[1024];
      detail::format_unprepared(e.stats(), text, sizeof text);
      d.blocker = text;
      error_.emplace(std::move(d));
      state_ = state::failed;
      return;
    }
    forked_at_ = std::chrono::steady_clock::now();
    write_end.reset(); // only the child writes
    region_.keep_out_of_later_forks();
    result_fd_ = std::move(read_end);
    state_ = state::running;
  }

  void require_valid() const {
    if (!valid()) throw std::future_error(std::future_errc::no_state);
  }

  // Waits until the outcome is known or `until` passes; true if known.
  bool wait_steady(std::chrono::steady_clock::time_point until) {
    if (remote_ && state_ == state::running) {
      if (!remote_->wait(until)) return false;
      finish_remote();
      return true;
    }
    while (state_ == state::running) {
      const bool no_pidfd = child_.native_handle() < 0;
      const int wake_fd = no_pidfd && !drained_ && !hung_up_ ? result_fd_.get() : -1;
      const detail::child_status& status = child_.wait_until(std::min(until, deadline_), wake_fd);
      if (status.ended()) {
        finish(status);
        break;
      }
      if (no_pidfd && collect()) { // the frame came first; the child is in _exit
        (void)child_.poll();
        finish(status);
        break;
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline_) {
        killed_for_timeout_ = true;
        finish(child_.kill_and_reap(SIGKILL));
        break;
      }
      if (now >= until) return false;
    }
    return true;
  }

  // Reads the frame if it is there; true once one was accepted. The buffer
  // holds a value's frame (+1: an oversized frame is noticed); an exception's
  // larger frame is read on into a second one, out of line, so the common
  // path writes to no more stack than it needs (each page written after a
  // fork is a copy-on-write fault).
  bool collect() {
    if (delivered_ != delivery::none) return true;
    if (drained_ || !result_fd_) return false;
    unsigned char buf[detail::frame_payload_offset + detail::value_payload_capacity<T>() + 1];
    bool eof = false;
    const std::size_t n = detail::read_available(result_fd_.get(), buf, sizeof buf, eof);
    hung_up_ = hung_up_ || eof;
    if (n == 0) return false;
    drained_ = true; // one atomic write: all of the frame or nothing arrived
    detail::frame_header h{};
    if (n >= sizeof h) std::memcpy(&h, buf, sizeof h);
    if (h.kind == detail::frame_kind::threw && n == sizeof buf) {
      collect_large_frame(buf, n);
    } else {
      accept_frame(buf, n);
    }
    return delivered_ != delivery::none;
  }

  FORKSAFE_NOINLINE void collect_large_frame(const unsigned char* head, std::size_t n) {
    unsigned char buf[detail::frame_capacity + 1];
    std::memcpy(buf, head, n);
    bool eof = false;
    n += detail::read_available(result_fd_.get(), buf + n, sizeof buf - n, eof);
    hung_up_ = hung_up_ || eof;
    accept_frame(buf, n);
  }

  void accept_frame(const unsigned char* buf, std::size_t n) {
    if (n < detail::frame_payload_offset) return;
    detail::frame_header h;
    std::memcpy(&h, buf, sizeof h);
    if (h.magic != detail::frame_magic || n != detail::frame_payload_offset + h.size) return;
    const unsigned char* payload = buf + detail::frame_payload_offset;
    switch (h.kind) {
    case detail::frame_kind::value:
      if constexpr (std::is_void_v<T>) {
        if (h.size == 0) delivered_ = delivery::value;
      } else if constexpr (in_handle) {
        if (h.size == sizeof(T)) {
          std::memcpy(storage_.bytes, payload, sizeof(T));
          delivered_ = delivery::value;
        }
      }
      break;
    case detail::frame_kind::value_in_region:
      if (in_region && h.size == 0) delivered_ = delivery::value;
      break;
    case detail::frame_kind::threw:
      if (h.type_size <= child_error::max_type_name_length && h.size >= h.type_size &&
          h.size - h.type_size <= child_error::max_what_length) {
        child_error::details d;
        d.why = child_error::reason::threw;
        d.pid = pid();
        d.exception_type = detail::demangle(std::string(reinterpret_cast<const char*>(payload), h.type_size));
        d.exception_what.assign(reinterpret_cast<const char*>(payload) + h.type_size, h.size - h.type_size);
        d.what_truncated = (h.flags & detail::frame_what_truncated) != 0;
        error_.emplace(std::move(d));
        delivered_ = delivery::threw;
      }
      break;
    }
  }

  // A pool task's outcome: its frame, or how its worker ended.
  void finish_remote() {
    detail::remote_result& r = *remote_;
    if (r.frame_size != 0) accept_frame(r.frame.data(), r.frame_size);
    if (in_region && delivered_ == delivery::value) region_ = std::move(r.region);
    killed_for_timeout_ = r.killed_for_timeout;
    drained_ = true;
    finish(r.status);
  }

  void finish(const detail::child_status& status) {
    collect();
    if (delivered_ == delivery::value) {
      state_ = state::has_value;
      return;
    }
    if (delivered_ != delivery::threw) {
      if (remote_ && remote_->cancelled) {
        child_error::details d;
        d.why = child_error::reason::cancelled;
        error_.emplace(std::move(d));
      } else if (remote_) {
        error_.emplace(detail::error_from_status(pid(), status, killed_for_timeout_, remote_->ran_for));
      } else {
        error_.emplace(detail::error_from_status(pid(), status, killed_for_timeout_,
                                                 std::chrono::steady_clock::now() - forked_at_,
                                                 child_.prepare_time()));
      }
    }
    state_ = state::failed;
  }

  T* value_pointer() noexcept requires(!std::is_void_v<T>) {
    if constexpr (in_region) {
      return std::launder(static_cast<T*>(region_.data()));
    } else {
      return std::launder(reinterpret_cast<T*>(storage_.bytes));
    }
  }

  detail::unique_fd result_fd_;
  detail::shared_region region_;
  [[no_unique_address]] storage_type storage_{};
  std::optional<child_error> error_;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  state state_ = state::empty;
  delivery delivered_ = delivery::none;
  bool drained_ = false;            // the frame (or garbage) was read: read no more
  bool hung_up_ = false;            // every write end is closed
  bool killed_for_timeout_ = false; // forksafe killed the child: its timeout passed
  std::chrono::steady_clock::time_point forked_at_{};
  std::shared_ptr<detail::remote_result> remote_; // a pool task, instead of child_
  detail::child_process child_;     // last: destroyed (killed and reaped) first
};

// ---------------------------------------------------------------------------
// fork_call
// ---------------------------------------------------------------------------

/// Forks; the child runs `std::invoke(f, args...)` and delivers its result.
/// Returns process_result<R>, R being that call's result type without cv,
/// once fork() has returned (that fork waits for the atfork_registry's
/// handlers: quiesce locks held by other threads delay it, until the call's
/// timeout or the registry's prepare timeout, whichever comes first; then no
/// child is made and get() throws child_error, prepare_timed_out()); get()
/// waits for the child. `f` and `args` are used in the child only (it
/// owns a copy of the whole address space), so they need not be
/// serialisable, and a callable may capture anything: only the result
/// crosses back.
///
/// Constraint: `f(args...)` is invocable and returns void or a
/// trivially_serializable type. A callable returning std::string, a vector, a
/// future, a lock, a pointer or a reference makes the call ill-formed, with a
/// diagnostic naming trivially_serializable.
///
/// In the parent: flushes C stdio and std::cout/std::clog/std::cerr (so
/// buffered output is not printed twice), blocks every signal across fork(),
/// runs the atfork_registry's handlers (as any fork() does).
/// In the child: only the calling thread exists; the registry's child
/// handlers have run (fork_generation() is one higher, fork-safe mutexes
/// behave as their policy says). It restores the signal mask, resets crash
/// signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS) to
/// SIG_DFL (a crash is reported as its signal, not handled by an inherited
/// handler; other handlers stay), runs the callable under a catch-all,
/// builds the result in place, flushes its stdio and standard C++ streams,
/// writes its result frame and ends with _exit on every path: no atexit
/// handler, static destructor or test framework reporter runs there, and
/// nothing unwinds past fork_call. A process the callable forks that returns
/// into fork_call ends there silently (exit code 0); only the child reports.
///
/// Errors: std::system_error with errno if the child cannot be started:
/// EMFILE/ENFILE (the pipe), ENOMEM (the shared mapping, e.g. under
/// RLIMIT_AS), EAGAIN/ENOMEM (fork, e.g. under RLIMIT_NPROC); nothing is
/// leaked then. Thread-safety: may be called from any number of threads at
/// once.
template <class F, class... Args>
  requires std::invocable<F, Args...> &&
           trivially_serializable<detail::transported_t<std::invoke_result_t<F, Args...>>>
[[nodiscard]] process_result<detail::call_result_t<F, Args...>> fork_call(const fork_options& options, F&& f,
                                                                          Args&&... args) {
  // Returns the callable's prvalue as is, so the child builds it in place.
  auto call = [&]() -> decltype(auto) {
    return std::invoke(std::forward<F>(f), std::forward<Args>(args)...);
  };
  return detail::result_access::start<detail::call_result_t<F, Args...>>(options, call);
}

/// fork_call with default options: no timeout, same process group.
template <class F, class... Args>
  requires std::invocable<F, Args...> &&
           trivially_serializable<detail::transported_t<std::invoke_result_t<F, Args...>>>
[[nodiscard]] process_result<detail::call_result_t<F, Args...>> fork_call(F&& f, Args&&... args) {
  return fork_call(fork_options{}, std::forward<F>(f), std::forward<Args>(args)...);
}

} // namespace forksafe

#endif // FORKSAFE_PROCESS_RESULT_HPP
