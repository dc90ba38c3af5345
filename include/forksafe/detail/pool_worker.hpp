// SPDX-License-Identifier: MIT
//
// forksafe/detail/pool_worker.hpp: a process_pool worker's side: the slot
// it shares with the parent (a mailbox in a shared mapping), how a task
// travels as bytes and runs there, and the worker's loop. The parent's side
// is detail/pool_core.hpp.

#ifndef FORKSAFE_DETAIL_POOL_WORKER_HPP
#define FORKSAFE_DETAIL_POOL_WORKER_HPP

#include "../child_error.hpp"
#include "config.hpp"
#include "eventfd.hpp"
#include "fd_passing.hpp"
#include "futex.hpp"
#include "owner_process.hpp"
#include "result_frame.hpp"
#include "shared_region.hpp"
#include "unique_fd.hpp"
#include "wire.hpp"

#include <array>        // the slot's request and response
#include <atomic>       // the slot's sequence words
#include <climits>      // INT_MAX
#include <cstddef>      // std::size_t
#include <cstdint>      // std::uint32_t
#include <cstring>      // std::memcpy
#include <functional>   // std::invoke
#include <new>          // std::launder
#include <stdexcept>    // arguments that arrive malformed
#include <string>       // their defect
#include <system_error> // a large result that cannot be sent
#include <tuple>        // the arguments

#include <fcntl.h>    // F_DUPFD_CLOEXEC: a worker's copy of its own descriptors
#include <sys/mman.h> // mmap: a large result's memfd
#include <sys/stat.h> // fstat: is a worker's descriptor still its own?
#include <unistd.h>   // getppid, write, close

#if defined(__linux__)
#include <linux/kcmp.h>  // KCMP_FILE: is a worker's descriptor still its own?
#include <sys/syscall.h> // SYS_kcmp
#endif

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// The callable and the arguments, as they travel: bytes.
template <class F, class... Args>
struct pool_payload {
  F f;
  std::tuple<Args...> args;
};

inline constexpr std::size_t pool_request_capacity = 1024;

enum class pool_op : std::uint32_t { run = 1, exit = 2 };

struct pool_slot;

/// What a worker hands the task it runs.
struct pool_call {
  const unsigned char* request; ///< the callable and arguments: in the slot,
  std::size_t request_size;     ///< or, when args_size != 0, in
  const unsigned char* args;    ///< a memfd the parent sent
  std::size_t args_size;
  void* region; ///< a large result that crosses as bytes is built here
  std::size_t region_size;
  pool_slot& slot;
  int socket; ///< where a large wire-form result's memfd goes
  owner_process worker;
};
using pool_invoke_fn = void (*)(pool_call& call) noexcept;

/// One worker's mailbox, in the shared mapping.
struct alignas(64) pool_slot {
  std::atomic<std::uint32_t> request_seq{0};    // the parent bumps it after writing a request
  std::atomic<std::uint32_t> taken_seq{0};      // the worker sets it to request_seq once it took the request
  std::atomic<std::uint32_t> response_seq{0};   // the worker bumps it after writing a response
  std::atomic<std::uint32_t> parent_waiting{0}; // threads of the parent waiting on response_seq
  pool_op op = pool_op::run;
  pool_invoke_fn invoke = nullptr;
  std::uint32_t region_size = 0;  // non-zero: a memfd for the result follows on the socket
  std::uint32_t request_size = 0; // bytes of `request` that are meaningful
  std::uint64_t args_size = 0;    // non-zero: the request is in a memfd that comes first on the socket
  std::uint32_t response_size = 0;
  alignas(64) std::array<unsigned char, pool_request_capacity> request;
  alignas(64) std::array<unsigned char, frame_capacity> response;
};

/// A callable crosses as its bytes when it is a function pointer (the worker
/// is a fork of the parent: the code is at the same address) or a type that
/// crosses as bytes (a lambda capturing plain values); otherwise (a struct
/// listing its members) in its wire form.
template <class F>
inline constexpr bool
    callable_as_bytes = (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) || crosses_as_bytes<F>;

/// Whether a task's callable and arguments travel as their bytes (else in
/// their wire form, detail/wire.hpp).
template <class F, class... Args>
inline constexpr bool payload_as_bytes = callable_as_bytes<F> && (crosses_as_bytes<Args> && ...) &&
                                         sizeof(pool_payload<F, Args...>) <= pool_request_capacity;

template <class F>
void write_callable(wire_writer& out, const F& f) {
  if constexpr (callable_as_bytes<F>) {
    out.put(&f, sizeof f);
  } else {
    write_value(out, f);
  }
}
template <class F>
bool read_callable(wire_reader& in, wire_slot<F>& f) {
  if constexpr (callable_as_bytes<F>) {
    const unsigned char* p = in.take(sizeof(F), "the callable");
    if (p != nullptr) f.adopt_bytes(p);
    return p != nullptr;
  } else {
    return read_value(in, f);
  }
}

/// The wire form of a task: the callable, then each argument.
template <class F, class... Args>
void write_task(wire_writer& out, const F& f, const Args&... args) {
  write_callable(out, f);
  (write_value(out, args), ...);
}

/// A worker's store for a large wire-form result: a memfd of its own, sent
/// to the parent over the socket (tagged with the response's sequence
/// number) before the answer is published.
struct worker_value_store {
  static constexpr bool ends_process = false;
  int socket;
  std::uint8_t tag;
  unique_fd fd{};
  value_memfd_writer writer{};
  unsigned char* reserve(std::size_t bytes) {
    fd = make_value_memfd("forksafe::process_pool worker");
    return writer.map(fd.get(), bytes);
  }
  void commit() {
    writer.seal();
    if (!send_fd(socket, fd.get(), tag)) {
      throw std::system_error(errno, std::generic_category(),
                              "forksafe::process_pool worker: could not send a large result's memfd (sendmsg)");
    }
  }
};

/// The tag a worker's memfd for response number `seq` carries.
inline std::uint8_t value_fd_tag(std::uint32_t seq) noexcept { return static_cast<std::uint8_t>(seq & 0xFFU); }

/// Runs a task in a worker: rebuilds the callable and arguments (from their
/// bytes or their wire form) and puts the outcome's frame in the slot, as
/// fork_call's child writes it to its pipe. A process the task forked that
/// comes back here writes nothing.
template <class R, class F, class... Args>
// NOLINTNEXTLINE(bugprone-exception-escape): what throws is in `call`, run only by produce_frame (noexcept)
void pool_invoke(pool_call& c) noexcept {
  using payload = pool_payload<F, Args...>;
  worker_value_store store{c.socket, value_fd_tag(c.slot.response_seq.load(std::memory_order_relaxed) + 1U)};
  const auto answer = [&c](auto& frame) noexcept {
    if (!c.worker.here()) return; // a process the task forked came back here
    c.slot.response_size = static_cast<std::uint32_t>(frame.size());
    std::memcpy(c.slot.response.data(), frame.data(), frame.size());
  };
  if constexpr (payload_as_bytes<F, Args...>) {
    alignas(payload) unsigned char storage[sizeof(payload)]; // NOLINT(modernize-avoid-c-arrays): raw storage
    std::memcpy(storage, c.request, sizeof(payload));
    payload& p = *std::launder(reinterpret_cast<payload*>(storage));
    auto call = [&]() -> decltype(auto) { return std::apply(p.f, p.args); };
    produce_frame<R>(call, c.region, c.region_size, store, answer);
  } else {
    auto call = [&c]() -> decltype(auto) {
      wire_reader in(c.args_size != 0 ? c.args : c.request, c.args_size != 0 ? c.args_size : c.request_size);
      wire_slot<F> f;
      std::tuple<wire_slot<Args>...> args;
      const bool ok =
          read_callable(in, f) && std::apply([&in](auto&... a) { return (read_value(in, a) && ...); }, args);
      if (!ok || in.left() != 0) {
        throw std::runtime_error("forksafe::process_pool worker: the task's arguments arrived malformed: " +
                                 (ok ? std::string("bytes left over") : in.defect()));
      }
      return std::apply([&f](auto&... a) -> decltype(auto) { return std::invoke(f.get(), a.get()...); }, args);
    };
    produce_frame<R>(call, c.region, c.region_size, store, answer);
  }
}

/// One of a worker's own descriptors, and a way to tell later whether the
/// number still names the same open file: a task may close it, and the
/// number may then be reused for something else. A copy made at the start
/// is compared with kcmp(KCMP_FILE), which tells one eventfd from another
/// (they share an inode); where kcmp is refused (seccomp, no CONFIG_KCMP) or
/// the copy could not be made, device and inode from fstat are compared.
class own_descriptor {
public:
  explicit own_descriptor(int fd) noexcept : fd_(fd), copy_(::fcntl(fd, F_DUPFD_CLOEXEC, 64)) {
    struct stat st {};
    if (::fstat(fd, &st) == 0) {
      dev_ = st.st_dev;
      ino_ = st.st_ino;
    }
  }
  own_descriptor(const own_descriptor&) = delete; // one copy per worker
  own_descriptor& operator=(const own_descriptor&) = delete;
  // No destructor: the worker ends with _exit.

  [[nodiscard]] bool intact() const noexcept {
#if defined(__linux__) && defined(SYS_kcmp)
    if (copy_ >= 0) {
      const pid_t self = ::getpid();
      const long same = ::syscall(SYS_kcmp, self, self, KCMP_FILE, fd_, copy_);
      if (same >= 0) return same == 0;
      if (errno == EBADF) return false; // closed (the number or the copy)
    }
#endif
    struct stat st {};
    return ::fstat(fd_, &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_;
  }

private:
  int fd_;
  int copy_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

/// The memfd the worker's last large request came in, kept mapped: the pool
/// reuses these, so the next large request is usually in the same one and
/// costs no mapping. Told apart by device and inode (a memfd's inode lives
/// while it is mapped here, so its number is not reused meanwhile).
class request_mapping {
public:
  request_mapping() noexcept = default;
  request_mapping(const request_mapping&) = delete;
  request_mapping& operator=(const request_mapping&) = delete;
  // No destructor: the worker ends with _exit.

  /// At least `bytes` of the memfd `fd` (taken, closed), read-only; nullptr
  /// if it cannot be mapped or is smaller.
  const void* map(int fd, std::size_t bytes) noexcept {
    if (fd < 0) return nullptr;
    struct stat st {};
    const bool known = ::fstat(fd, &st) == 0;
    if (known && data_ != nullptr && st.st_dev == dev_ && st.st_ino == ino_ && size_ >= bytes) {
      ::close(fd);
      return data_;
    }
    const std::size_t size = known ? static_cast<std::size_t>(st.st_size) : 0;
    if (size < bytes) {
      ::close(fd);
      return nullptr;
    }
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) return nullptr;
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = p;
    size_ = size;
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    return data_;
  }

private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

/// A worker's whole life: wait for a request, run it, answer; until told to
/// exit, or until the parent is gone (checked once a second while idle: a
/// parent-death signal would follow the forking thread, not the process).
/// A task that closed the worker's socket or event descriptor (or put
/// something else at their numbers) gets its answer through the slot; the
/// worker checks a descriptor only before it uses it (a caller waiting in
/// get() is woken through the slot's futex, which needs none), and exits to
/// be replaced rather than write into or read from one that is no longer
/// its own. Returns the exit code (child_process::spawn
/// _exits with it).
inline int pool_worker_main(pool_slot& slot, int socket, int events_fd, pid_t parent) noexcept {
  const auto self = owner_process::current();
  const own_descriptor own_socket(socket);
  const own_descriptor own_events(events_fd);
  request_mapping requests;
  // The slot was reset to 0 before the fork: a request may already be there.
  std::uint32_t seen = 0;
  const timespec second{1, 0};
  for (;;) {
    std::uint32_t now = slot.request_seq.load(std::memory_order_acquire);
    while (now == seen) {
      if (::getppid() != parent) return 0;
      futex_wait(slot.request_seq, seen, &second, true);
      now = slot.request_seq.load(std::memory_order_acquire);
    }
    seen = now;
    if (slot.op == pool_op::exit) return 0;
    const std::size_t region_size = slot.region_size;
    const auto args_size = static_cast<std::size_t>(slot.args_size);
    // A task before this one closed the socket (or put something else at its
    // number): leave this request untaken; the pool gives it to a replacement.
    if ((region_size != 0 || args_size != 0) && !own_socket.intact()) return 0;
    slot.taken_seq.store(now, std::memory_order_release); // from here on, a death fails this task
    const void* args = nullptr;
    if (args_size != 0) {
      args = requests.map(receive_fd(socket), args_size);
      if (args == nullptr) return child_error::undelivered_exit_code;
    }
    void* region = nullptr;
    if (region_size != 0) {
      const int fd = receive_fd(socket);
      if (fd >= 0) {
        void* p = ::mmap(nullptr, region_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        region = p == MAP_FAILED ? nullptr : p;
        ::close(fd);
      }
      if (region == nullptr) return child_error::undelivered_exit_code;
    }
    pool_call call{slot.request.data(),
                   slot.request_size,
                   static_cast<const unsigned char*>(args),
                   args_size,
                   region,
                   region_size,
                   slot,
                   socket,
                   self};
    slot.invoke(call);
    if (!self.here()) return 0; // a process the task forked came back here: only the worker answers
    if (region != nullptr) ::munmap(region, region_size);
    slot.response_seq.fetch_add(1, std::memory_order_seq_cst);
    if (slot.parent_waiting.load(std::memory_order_seq_cst) != 0) {
      futex_wake(slot.response_seq, INT_MAX, true); // the caller collects it: no descriptor involved
    } else if (own_events.intact()) {
      ring(events_fd); // the supervisor collects it
    } else {
      return 0; // the supervisor sees the end, collects the answer, replaces the worker
    }
  }
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_POOL_WORKER_HPP
