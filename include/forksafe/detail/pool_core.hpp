// SPDX-License-Identifier: MIT
//
// forksafe/detail/pool_core.hpp: the machinery behind process_pool. Not for
// direct use; see process_pool.hpp for the design.

#ifndef FORKSAFE_DETAIL_POOL_CORE_HPP
#define FORKSAFE_DETAIL_POOL_CORE_HPP

#include "../process_result.hpp"
#include "child_process.hpp"
#include "config.hpp"
#include "futex.hpp"

#include <algorithm>    // std::min
#include <array>        // request and frame buffers
#include <atomic>       // slot sequence words
#include <chrono>       // deadlines
#include <climits>      // INT_MAX
#include <cstddef>      // std::size_t
#include <cstdint>      // std::uint32_t
#include <cstring>      // std::memcpy
#include <deque>        // the queue
#include <functional>   // std::apply
#include <memory>       // std::shared_ptr
#include <new>          // placement new: forgetting the supervisor's handle in a forked process
#include <mutex>        // the pool's lock (parent side only)
#include <optional>     // pool_options::task_timeout
#include <set>          // shared objects mapped in the workers
#include <string>       // object names
#include <stdexcept>    // std::invalid_argument, std::logic_error
#include <system_error> // std::system_error
#include <thread>       // the supervisor
#include <tuple>        // the arguments
#include <vector>       // workers

#include <dlfcn.h>        // dladdr: is the task's code mapped in the workers?
#include <link.h>         // dl_iterate_phdr
#include <poll.h>         // ppoll: the supervisor's wait
#include <sys/eventfd.h>  // eventfd: workers and submitters wake the supervisor
#include <sys/mman.h>     // memfd_create, mmap
#include <sys/socket.h>   // socketpair, SCM_RIGHTS: a large result's memfd
#include <fcntl.h>        // F_DUPFD_CLOEXEC: a worker's copy of its own descriptors
#include <sys/stat.h>     // fstat: is a worker's descriptor still its own?
#include <unistd.h>       // read, write, close, ftruncate

#if defined(__linux__)
#include <linux/futex.h> // FUTEX_WAIT, FUTEX_WAKE (shared)
#include <linux/kcmp.h>  // KCMP_FILE: is a worker's descriptor still its own?
#include <sys/syscall.h> // SYS_futex
#endif

namespace forksafe {

/// Options for a process_pool.
struct pool_options {
  /// How long one task may run in its worker. Past it the worker is killed
  /// (SIGKILL) and replaced, and the task fails with child_error timed_out().
  /// Empty: no limit.
  std::optional<std::chrono::nanoseconds> task_timeout{};
  /// How many tasks a worker runs before it is replaced by a fresh fork of
  /// the parent (0: never). Bounds what a leaky task can accumulate.
  std::size_t max_tasks_per_worker = 0;
  /// How long shutdown() (and the destructor) lets queued and running tasks
  /// finish before killing busy workers (their tasks fail timed_out()) and
  /// failing queued tasks (cancelled(): they never ran).
  std::chrono::nanoseconds shutdown_deadline = std::chrono::seconds(5);
};

namespace detail {

/// The callable and the arguments, as they travel: bytes.
template <class F, class... Args>
struct pool_payload {
  F f;
  std::tuple<Args...> args;
};

inline constexpr std::size_t pool_request_capacity = 1024;

// Futex calls on a word in a MAP_SHARED mapping, seen by several processes.
inline void shared_futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                              const timespec* timeout) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, timeout, nullptr, 0);
}
inline void shared_futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, count, nullptr, 0);
}

enum class pool_op : std::uint32_t { run = 1, exit = 2 };

struct pool_slot;
using pool_invoke_fn = void (*)(const unsigned char* request, void* region, std::size_t region_size,
                                pool_slot& slot, pid_t worker) noexcept;

/// One worker's mailbox, in the shared mapping.
struct alignas(64) pool_slot {
  std::atomic<std::uint32_t> request_seq{0};    // the parent bumps it after writing a request
  std::atomic<std::uint32_t> taken_seq{0};      // the worker sets it to request_seq once it took the request
  std::atomic<std::uint32_t> response_seq{0};   // the worker bumps it after writing a response
  std::atomic<std::uint32_t> parent_waiting{0}; // threads of the parent waiting on response_seq
  pool_op op = pool_op::run;
  pool_invoke_fn invoke = nullptr;
  std::uint32_t region_size = 0; // non-zero: a memfd for the result follows on the socket
  std::uint32_t response_size = 0;
  alignas(64) unsigned char request[pool_request_capacity];
  alignas(64) unsigned char response[frame_capacity];
};

/// Runs a task in a worker: rebuilds the payload from its bytes and puts the
/// outcome's frame in the slot, as fork_call's child writes it to its pipe.
/// A process the task forked that comes back here writes nothing.
template <class R, class Payload>
void pool_invoke(const unsigned char* request, void* region, std::size_t region_size, pool_slot& slot,
                 pid_t worker) noexcept {
  alignas(Payload) unsigned char storage[sizeof(Payload)];
  std::memcpy(storage, request, sizeof(Payload));
  Payload& p = *std::launder(reinterpret_cast<Payload*>(storage));
  auto call = [&]() -> decltype(auto) { return std::apply(p.f, p.args); };
  produce_frame<R>(call, region, region_size, [&slot, worker](auto& frame) noexcept {
    if (::getpid() != worker) return;
    slot.response_size = static_cast<std::uint32_t>(frame.size());
    std::memcpy(slot.response, frame.data(), frame.size());
  });
}

class pool_core;

/// One task, parent side. Written under the pool's lock; the outcome
/// (remote_result's fields) is published by done (release) and read after it
/// (acquire).
struct pool_ticket final : remote_result {
  std::atomic<std::uint32_t> done{0}; // 1: the outcome is known (a private futex)
  std::atomic<int> slot{-1};          // the worker slot running it, -1 while queued or done
  std::shared_ptr<pool_core> core;    // what waits for it, kills it, signals it
  pool_invoke_fn invoke = nullptr;
  std::size_t request_size = 0;
  std::size_t result_bytes = 0; // > 0: the result is built in `region`
  std::array<unsigned char, pool_request_capacity> request; // only request_size bytes are meaningful
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point assigned_at{}; // handed to its worker
  int event_fd = -1; // made on demand for native_handle()
  bool kill_requested = false; // kill() was called on it (under the pool's lock)
  bool requeued = false;       // went back to the queue once: a second time it fails instead

  // User-provided, so make_shared does not zero the 5 KiB of buffers first:
  // only the bytes a task writes are ever read.
  pool_ticket() noexcept {}
  ~pool_ticket() override {
    if (event_fd >= 0) ::close(event_fd);
  }
  inline bool wait(std::chrono::steady_clock::time_point until) override;
  inline int native_handle() override;
  inline void kill(int sig) override;
};

/// One byte with room for one descriptor in its control data: the message
/// send_fd and receive_fd exchange.
struct fd_message {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  fd_message() noexcept {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
  fd_message(const fd_message&) = delete; // msg points into itself
  fd_message& operator=(const fd_message&) = delete;
};

/// Sends `fd` over a unix socket.
inline bool send_fd(int socket, int fd) noexcept {
  fd_message m;
  cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  ssize_t n;
  do {
    n = ::sendmsg(socket, &m.msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n == 1;
}

/// Receives a descriptor sent with send_fd; -1 on failure.
inline int receive_fd(int socket) noexcept {
  fd_message m;
  ssize_t n;
  do {
    n = ::recvmsg(socket, &m.msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  if (n != 1 || c == nullptr || c->cmsg_type != SCM_RIGHTS) return -1;
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
  return fd;
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
  const pid_t self = ::getpid();
  const own_descriptor own_socket(socket);
  const own_descriptor own_events(events_fd);
  // The slot was reset to 0 before the fork: a request may already be there.
  std::uint32_t seen = 0;
  const timespec second{1, 0};
  for (;;) {
    std::uint32_t now = slot.request_seq.load(std::memory_order_acquire);
    while (now == seen) {
      if (::getppid() != parent) return 0;
      shared_futex_wait(slot.request_seq, seen, &second);
      now = slot.request_seq.load(std::memory_order_acquire);
    }
    seen = now;
    if (slot.op == pool_op::exit) return 0;
    const std::size_t region_size = slot.region_size;
    // A task before this one closed the socket (or put something else at its
    // number): leave this request untaken; the pool gives it to a replacement.
    if (region_size != 0 && !own_socket.intact()) return 0;
    slot.taken_seq.store(now, std::memory_order_release); // from here on, a death fails this task
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
    slot.invoke(slot.request, region, region_size, slot, self);
    if (::getpid() != self) return 0; // a process the task forked came back here: only the worker answers
    if (region != nullptr) ::munmap(region, region_size);
    slot.response_seq.fetch_add(1, std::memory_order_seq_cst);
    if (slot.parent_waiting.load(std::memory_order_seq_cst) != 0) {
      shared_futex_wake(slot.response_seq, INT_MAX); // the caller collects it: no descriptor involved
    } else if (own_events.intact()) {
      const std::uint64_t one = 1;
      (void)!::write(events_fd, &one, sizeof one); // the supervisor collects it
    } else {
      return 0; // the supervisor sees the end, collects the answer, replaces the worker
    }
  }
}

class pool_core : public std::enable_shared_from_this<pool_core> {
public:
  pool_core(std::size_t workers, const pool_options& options)
      : options_(options), workers_(workers), owner_(::getpid()) {}
  pool_core(const pool_core&) = delete;
  pool_core& operator=(const pool_core&) = delete;
  ~pool_core() { shutdown(); }

  void start() {
    slots_ = shared_region(sizeof(pool_slot) * workers_.size());
    for (std::size_t i = 0; i < workers_.size(); ++i) new (&slot(i)) pool_slot();
    events_fd_ = make_eventfd();
    wake_fd_ = make_eventfd();
    record_loaded_objects();
    for (std::size_t i = 0; i < workers_.size(); ++i) spawn(i); // undone by ~pool_core if one throws
    supervisor_ = std::thread([this] { supervise(); });
  }

  [[nodiscard]] std::size_t size() const noexcept { return workers_.size(); }

  std::shared_ptr<pool_ticket> submit(pool_invoke_fn invoke, std::size_t result_bytes, const void* payload,
                                      std::size_t payload_size, const void* code) {
    if (::getpid() != owner_) {
      throw std::logic_error("forksafe::process_pool::submit: called in a process forked from the pool's "
                             "owner; the workers belong to the owner");
    }
    check_code_is_mapped(reinterpret_cast<const void*>(invoke));
    if (code != nullptr) check_code_is_mapped(code);
    auto t = std::make_shared<pool_ticket>();
    t->core = shared_from_this();
    t->invoke = invoke;
    t->request_size = payload_size;
    std::memcpy(t->request.data(), payload, payload_size);
    t->result_bytes = result_bytes;
    if (result_bytes != 0) t->region = make_memfd_region(result_bytes);
    std::lock_guard lock(mutex_);
    if (stopping_) throw std::logic_error("forksafe::process_pool::submit: the pool has been shut down");
    queue_.push_back(t);
    dispatch();
    return t;
  }

  /// Waits until `t`'s outcome is known or `until`; true if known.
  bool wait(pool_ticket& t, std::chrono::steady_clock::time_point until) {
    using namespace std::chrono_literals;
    // Checked before mutex_, which a forked process may have inherited locked.
    if (::getpid() != owner_) {
      throw std::logic_error("forksafe::process_pool: a task's result waited for in a process forked from the "
                             "pool's owner; only the owner's threads may wait for it");
    }
    while (t.done.load(std::memory_order_acquire) == 0) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= until) return false;
      const timespec slice = to_timespec(std::min<std::chrono::nanoseconds>(until - now, 20ms));
      const int s = t.slot.load(std::memory_order_acquire);
      if (s < 0) {
        futex_wait(t.done, 0, &slice); // queued: the dispatcher or the supervisor moves it on
        continue;
      }
      pool_slot& sl = slot(static_cast<std::size_t>(s));
      const std::uint32_t seen = sl.response_seq.load(std::memory_order_seq_cst);
      if (collect_if_answered(static_cast<std::size_t>(s), &t)) continue;
      sl.parent_waiting.fetch_add(1, std::memory_order_seq_cst);
      shared_futex_wait(sl.response_seq, seen, &slice);
      sl.parent_waiting.fetch_sub(1, std::memory_order_relaxed);
      collect_if_answered(static_cast<std::size_t>(s), &t);
    }
    return true;
  }

  /// A descriptor that turns readable once `t` is done.
  int event_fd(pool_ticket& t) {
    if (::getpid() != owner_) return -1; // see wait()
    std::lock_guard lock(mutex_);
    if (t.event_fd < 0) {
      t.event_fd = make_eventfd();
      if (t.done.load(std::memory_order_acquire) != 0) signal(t.event_fd);
    }
    return t.event_fd;
  }

  /// Sends `sig` to the worker running `t`, if it runs.
  void kill(pool_ticket& t, int sig) {
    if (::getpid() != owner_) return; // see wait()
    std::lock_guard lock(mutex_);
    const int s = t.slot.load(std::memory_order_relaxed);
    if (s >= 0 && workers_[static_cast<std::size_t>(s)].task.get() == &t) {
      t.kill_requested = true; // its worker's death is its end, even before the worker took it
      workers_[static_cast<std::size_t>(s)].proc.kill(sig);
    }
  }

  void shutdown() {
    if (::getpid() != owner_) {
      forget_in_forked_process();
      return;
    }
    std::lock_guard serial(shutdown_mutex_); // a second caller waits for the first to finish
    {
      std::lock_guard lock(mutex_);
      if (!supervisor_.joinable()) {
        end_workers(); // start() failed half-way, or already shut down
        return;
      }
      if (!stopping_) {
        stopping_ = true;
        stop_by_ = std::chrono::steady_clock::now() + options_.shutdown_deadline;
      }
    }
    signal(wake_fd_);
    supervisor_.join();
    std::lock_guard lock(mutex_);
    end_workers();
  }

private:
  struct worker {
    child_process proc;
    int socket = -1;                   // parent's end of the socketpair
    std::shared_ptr<pool_ticket> task; // running here
    std::uint32_t answered = 0;        // response_seq already collected
    std::size_t tasks_run = 0;
    bool retiring = false;             // told to exit; replaced when it has
    std::chrono::steady_clock::time_point respawn_at{}; // a failed replacement is tried again then
  };

  static constexpr std::chrono::seconds replacement_prepare_limit{1};
  static constexpr std::chrono::milliseconds respawn_delay{10};

  pool_slot& slot(std::size_t i) const noexcept { return static_cast<pool_slot*>(slots_.data())[i]; }

  static int make_eventfd() {
    const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) throw_errno(errno, "forksafe::process_pool: eventfd failed");
    return fd;
  }
  static void signal(int fd) noexcept {
    const std::uint64_t one = 1;
    (void)!::write(fd, &one, sizeof one);
  }
  static void drain(int fd) noexcept {
    std::uint64_t n;
    (void)!::read(fd, &n, sizeof n);
  }

  static shared_region make_memfd_region(std::size_t bytes) {
    const int fd = ::memfd_create("forksafe-result", MFD_CLOEXEC);
    if (fd < 0) throw_errno(errno, "forksafe::process_pool: memfd_create for a large result failed");
    shared_region r;
    try {
      if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
        throw_errno(errno, "forksafe::process_pool: ftruncate of a result memfd failed");
      }
      r = shared_region::adopt_fd(fd, bytes);
    } catch (...) {
      ::close(fd);
      throw;
    }
    return r;
  }

  // Under mutex_: tasks still queued never ran.
  void cancel_queued() {
    for (auto& q : queue_) {
      q->cancelled = true;
      finish(*q);
    }
    queue_.clear();
  }

  // Forks worker i, its preparation done by `prepare_by` at the latest
  // (throws detail::fork_unprepared otherwise). Never called with mutex_
  // held: fork() runs the quiesce handlers, which may wait for a thread that
  // holds a quiesce lock and waits for mutex_.
  void spawn(std::size_t i, std::chrono::steady_clock::time_point prepare_by =
                                std::chrono::steady_clock::time_point::max()) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
      throw_errno(errno, "forksafe::process_pool: socketpair failed");
    }
    pool_slot* sl = &slot(i);
    // Constructed once in start(): a caller may still be leaving a wait on
    // this slot (parent_waiting), so only the sequence words start over.
    sl->request_seq.store(0, std::memory_order_relaxed);
    sl->taken_seq.store(0, std::memory_order_relaxed);
    sl->response_seq.store(0, std::memory_order_relaxed);
    const int events = events_fd_;
    const pid_t parent = ::getpid();
    const int worker_end = fds[1];
    const int parent_end = fds[0];
    child_process proc;
    try {
      spawn_options options;
      options.default_all_handlers = true; // a worker is a process of its own
      options.prepare_deadline = prepare_by;
      proc = child_process::spawn(
          [sl, worker_end, parent_end, events, parent]() noexcept {
            ::close(parent_end);
            return pool_worker_main(*sl, worker_end, events, parent);
          },
          options);
    } catch (...) {
      ::close(fds[0]);
      ::close(fds[1]);
      throw;
    }
    ::close(worker_end);
    std::lock_guard lock(mutex_);
    worker& w = workers_[i];
    w.proc = std::move(proc);
    if (w.socket >= 0) ::close(w.socket);
    w.socket = parent_end;
    w.answered = 0;
    w.tasks_run = 0;
    w.retiring = false;
  }

  // Under mutex_: hands queued tasks to idle workers.
  void dispatch() {
    for (std::size_t i = 0; i < workers_.size() && !queue_.empty(); ++i) {
      worker& w = workers_[i];
      if (w.task || w.retiring || !w.proc.valid() || w.proc.status().ended()) continue;
      std::shared_ptr<pool_ticket> t = std::move(queue_.front());
      queue_.pop_front();
      assign(i, std::move(t));
    }
  }

  void assign(std::size_t i, std::shared_ptr<pool_ticket> t) {
    worker& w = workers_[i];
    pool_slot& sl = slot(i);
    sl.op = pool_op::run;
    sl.invoke = t->invoke;
    std::memcpy(sl.request, t->request.data(), t->request_size);
    sl.region_size = static_cast<std::uint32_t>(t->result_bytes != 0 ? t->region.size() : 0);
    if (sl.region_size != 0 && !send_fd(w.socket, t->region.fd())) {
      // The worker is gone, or its socket is (a task closed it): tell it to
      // exit (the supervisor replaces it) and requeue the task, once; a
      // second failure is not the worker's doing: fail the task (lost).
      retire(i);
      if (!requeue_once(t)) finish(*t);
      return;
    }
    t->pid.store(w.proc.pid(), std::memory_order_relaxed);
    t->assigned_at = std::chrono::steady_clock::now();
    t->deadline = options_.task_timeout ? deadline_after(t->assigned_at, *options_.task_timeout)
                                        : std::chrono::steady_clock::time_point::max();
    t->slot.store(static_cast<int>(i), std::memory_order_release);
    // The supervisor sleeps until the earliest deadline it knew of: tell it
    // of this one (only when there are timeouts).
    if (t->deadline != std::chrono::steady_clock::time_point::max()) signal(wake_fd_);
    w.task = std::move(t);
    sl.request_seq.fetch_add(1, std::memory_order_release);
    shared_futex_wake(sl.request_seq, 1);
    futex_wake(w.task->done, INT_MAX); // a waiter on the queued task now waits on the slot
  }

  // Under mutex_: puts `t` back at the head of the queue unless it was put
  // back before (then a second worker failed it too: it is not the
  // workers' doing, and retrying could fork for ever). True if requeued.
  bool requeue_once(std::shared_ptr<pool_ticket>& t) {
    if (t->requeued) return false;
    t->requeued = true;
    queue_.push_front(std::move(t));
    return true;
  }

  // Under mutex_: publishes the outcome and wakes the waiters.
  static void finish(pool_ticket& t) {
    t.slot.store(-1, std::memory_order_relaxed);
    t.done.store(1, std::memory_order_release);
    futex_wake(t.done, INT_MAX);
    if (t.event_fd >= 0) signal(t.event_fd);
  }

  // If worker i answered, takes the answer into its ticket. `only` (if set):
  // only when that is the ticket it runs. Returns true if it collected.
  bool collect_if_answered(std::size_t i, const pool_ticket* only) {
    std::lock_guard lock(mutex_);
    return collect(i, only);
  }

  bool collect(std::size_t i, const pool_ticket* only = nullptr) {
    worker& w = workers_[i];
    pool_slot& sl = slot(i);
    if (!w.task || (only != nullptr && w.task.get() != only)) return false;
    const std::uint32_t seq = sl.response_seq.load(std::memory_order_acquire);
    if (seq == w.answered) return false;
    w.answered = seq;
    pool_ticket& t = *w.task;
    t.frame_size = std::min<std::size_t>(sl.response_size, t.frame.size());
    std::memcpy(t.frame.data(), sl.response, t.frame_size);
    t.status = child_status{child_status::kind::exited, 0}; // the worker lives
    finish(t);
    w.task.reset();
    if (options_.max_tasks_per_worker != 0 && ++w.tasks_run >= options_.max_tasks_per_worker) {
      retire(i);
    }
    dispatch();
    return true;
  }

  void retire(std::size_t i) {
    pool_slot& sl = slot(i);
    workers_[i].retiring = true;
    sl.op = pool_op::exit;
    sl.request_seq.fetch_add(1, std::memory_order_release);
    shared_futex_wake(sl.request_seq, 1);
  }

  // Under mutex_: worker i ended (or was killed); fails its task if it had
  // not answered, or puts it back at the head of the queue if the worker
  // never took it (it died idle, before it saw the request), nobody asked
  // to kill that task, and it was not requeued before (a task whose second
  // worker also dies before taking it fails: something kills every new
  // worker, and retrying would fork for ever). Returns true
  // if it must be replaced.
  bool bury(std::size_t i, const child_status& status, bool for_timeout) {
    worker& w = workers_[i];
    collect(i); // an answer written just before the end still counts
    pool_slot& sl = slot(i);
    if (w.task && !for_timeout && !w.task->kill_requested &&
        sl.taken_seq.load(std::memory_order_acquire) != sl.request_seq.load(std::memory_order_relaxed)) {
      w.task->slot.store(-1, std::memory_order_release);
      if (requeue_once(w.task)) {
        shared_futex_wake(sl.response_seq, INT_MAX); // a caller waiting on the slot goes back to the ticket
        return true;
      }
    }
    if (w.task) {
      pool_ticket& t = *w.task;
      t.status = status;
      t.killed_for_timeout = for_timeout;
      if (for_timeout) t.ran_for = std::chrono::steady_clock::now() - t.assigned_at;
      finish(t);
      w.task.reset();
      shared_futex_wake(slot(i).response_seq, INT_MAX); // a caller waiting on the slot looks again
    }
    return true;
  }

  void supervise() {
    using clock = std::chrono::steady_clock;
    std::vector<pollfd> fds;
    std::vector<std::size_t> replace;
    for (;;) {
      clock::time_point wake_at = clock::time_point::max();
      fds.clear();
      fds.push_back({wake_fd_, POLLIN, 0});
      fds.push_back({events_fd_, POLLIN, 0});
      {
        std::lock_guard lock(mutex_);
        bool blind = false; // a live worker without a pidfd: its end wakes nothing
        for (const worker& w : workers_) {
          fds.push_back({w.proc.valid() ? w.proc.native_handle() : -1, POLLIN, 0});
          if (w.task) wake_at = std::min(wake_at, w.task->deadline);
          blind = blind || (w.proc.valid() && w.proc.native_handle() < 0 && !w.proc.status().ended());
        }
        // Without pidfds (Linux before 5.3, a seccomp filter, valgrind) the
        // supervisor looks at its workers every 10 ms instead.
        if (blind) wake_at = std::min(wake_at, clock::now() + std::chrono::milliseconds(10));
        for (const worker& w : workers_) {
          if (!w.proc.valid() && w.respawn_at != clock::time_point{}) wake_at = std::min(wake_at, w.respawn_at);
        }
        if (stopping_) {
          if (queue_.empty() && std::none_of(workers_.begin(), workers_.end(), [](const worker& w) { return bool(w.task); })) {
            return;
          }
          wake_at = std::min(wake_at, stop_by_);
        }
      }
      const auto now = clock::now();
      timespec ts{};
      const timespec* timeout = nullptr;
      if (wake_at != clock::time_point::max()) {
        ts = to_timespec(wake_at > now ? std::chrono::duration_cast<std::chrono::nanoseconds>(wake_at - now)
                                       : std::chrono::nanoseconds(0));
        timeout = &ts;
      }
      if (::ppoll(fds.data(), fds.size(), timeout, nullptr) < 0 && errno != EINTR) {
        throw_errno(errno, "forksafe::process_pool: ppoll failed in the supervisor"); // std::terminate
      }
      drain(wake_fd_);
      drain(events_fd_);
      replace.clear();
      {
        std::lock_guard lock(mutex_);
        const auto t = clock::now();
        for (std::size_t i = 0; i < workers_.size(); ++i) {
          worker& w = workers_[i];
          collect(i);
          if (!w.proc.valid()) continue;
          bool ended = false;
          if (w.task && t >= w.task->deadline) {
            const child_status s = w.proc.kill_and_reap(SIGKILL);
            ended = bury(i, s, true);
          } else if (w.proc.poll().ended()) {
            ended = bury(i, w.proc.status(), false);
          }
          if (ended && (!stopping_ || !queue_.empty())) replace.push_back(i);
        }
        if (stopping_ && t >= stop_by_) {
          for (std::size_t i = 0; i < workers_.size(); ++i) {
            if (!workers_[i].task) continue;
            bury(i, workers_[i].proc.kill_and_reap(SIGKILL), true);
          }
          cancel_queued();
          return;
        }
        // Slots whose replacement failed before: due again.
        for (std::size_t i = 0; i < workers_.size(); ++i) {
          if (!workers_[i].proc.valid() && workers_[i].respawn_at <= t && (!stopping_ || !queue_.empty())) {
            replace.push_back(i);
          }
        }
      }
      for (std::size_t i : replace) {
        try {
          // Bounded, so the supervisor goes on enforcing timeouts while
          // other threads hold what the fork waits for.
          spawn(i, clock::now() + replacement_prepare_limit);
        } catch (...) {
          // fork failed (EAGAIN) or could not be prepared in time: the slot
          // stays empty (queued tasks wait for the other workers) and is
          // tried again shortly.
          std::lock_guard lock(mutex_);
          workers_[i].proc = child_process();
          workers_[i].respawn_at = clock::now() + respawn_delay;
        }
      }
      std::lock_guard lock(mutex_);
      dispatch();
    }
  }

  // In a process forked from the owner (a fork_call child, say, that
  // destroys its copy of the pool): the workers, the supervisor and the
  // slots belong to the owner, so touch none of them; close this process's
  // copies of the descriptors and let go of the supervisor's thread object
  // (the thread itself did not survive the fork).
  void forget_in_forked_process() noexcept {
    if (forgotten_) return;
    forgotten_ = true;
    // The supervisor thread did not survive the fork. Joining or detaching
    // its handle would act on a thread that does not exist here (TSan's
    // runtime aborts on the detach), and destroying a joinable handle calls
    // std::terminate: a non-joinable handle is built over it instead (a
    // std::thread holds only an id; nothing depends on its destructor).
    if (supervisor_.joinable()) ::new (static_cast<void*>(&supervisor_)) std::thread();
    for (worker& w : workers_) w.proc = child_process(); // inert here: closes its pidfd, signals nothing
    close_descriptors();
  }

  // Closes this process's pool descriptors: the workers' sockets and the
  // two eventfds.
  void close_descriptors() noexcept {
    for (worker& w : workers_) {
      if (w.socket >= 0) ::close(w.socket);
      w.socket = -1;
    }
    for (int* fd : {&events_fd_, &wake_fd_}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  }

  // Under mutex_ (or before start): tells every worker to exit, waits until
  // stop_by_, then kills the rest. Closes everything.
  void end_workers() {
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      if (workers_[i].proc.valid() && !workers_[i].proc.status().ended()) retire(i);
    }
    const auto until = stopping_ ? stop_by_ : std::chrono::steady_clock::now();
    for (worker& w : workers_) {
      if (w.proc.valid()) {
        w.proc.wait_until(std::max(until, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)));
        w.proc.kill_and_reap(SIGKILL);
        w.proc = child_process();
      }
    }
    cancel_queued();
    close_descriptors();
    // The slots stay mapped until the core is destroyed: a thread still in
    // wait() on a task of this pool may be reading its slot (every ticket
    // holds the core).
  }

  // ---- code mapped in the workers ---------------------------------------

  struct loaded_object {
    ElfW(Addr) bias;
    std::string name;
    friend bool operator<(const loaded_object& a, const loaded_object& b) {
      return a.bias != b.bias ? a.bias < b.bias : a.name < b.name;
    }
  };

  // The shared object (load bias and name) whose segments hold `address`.
  static std::optional<loaded_object> object_holding(const void* address) {
    struct search {
      ElfW(Addr) address;
      std::optional<loaded_object> found;
    } s{reinterpret_cast<ElfW(Addr)>(address), std::nullopt};
    ::dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* p) {
          auto& q = *static_cast<search*>(p);
          for (int k = 0; k < info->dlpi_phnum; ++k) {
            const ElfW(Phdr)& ph = info->dlpi_phdr[k];
            const ElfW(Addr) start = info->dlpi_addr + ph.p_vaddr;
            if (ph.p_type == PT_LOAD && q.address >= start && q.address < start + ph.p_memsz) {
              q.found = loaded_object{info->dlpi_addr, info->dlpi_name != nullptr ? info->dlpi_name : ""};
              return 1;
            }
          }
          return 0;
        },
        &s);
    return s.found;
  }

  void record_loaded_objects() {
    ::dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* self) {
          static_cast<pool_core*>(self)->loaded_.insert(
              loaded_object{info->dlpi_addr, info->dlpi_name != nullptr ? info->dlpi_name : ""});
          return 0;
        },
        this);
  }

  // Throws std::invalid_argument if `code` lies in an object loaded after
  // the workers were forked. Each address is looked up once.
  void check_code_is_mapped(const void* code) {
    {
      std::lock_guard lock(mutex_);
      if (checked_.count(code) != 0) return;
    }
    const auto object = object_holding(code);
    if (object && loaded_.count(*object) == 0) {
      throw std::invalid_argument("forksafe::process_pool::submit: the task's code is in " +
                                  (object->name.empty() ? std::string("an object") : object->name) +
                                  ", loaded after the pool's workers were forked; they do not have it mapped");
    }
    std::lock_guard lock(mutex_);
    checked_.insert(code);
  }

  pool_options options_;
  shared_region slots_;
  std::mutex mutex_;
  std::deque<std::shared_ptr<pool_ticket>> queue_;
  std::vector<worker> workers_;
  std::set<loaded_object> loaded_;  // written before the supervisor starts, then only read
  std::set<const void*> checked_;   // code addresses found mapped (under mutex_)
  int events_fd_ = -1;
  int wake_fd_ = -1;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point stop_by_{};
  pid_t owner_;            // the process that made the pool: the workers' parent
  bool forgotten_ = false; // forget_in_forked_process ran (in a forked process)
  std::mutex shutdown_mutex_;
  std::thread supervisor_;
};

inline bool pool_ticket::wait(std::chrono::steady_clock::time_point until) {
  return done.load(std::memory_order_acquire) != 0 || core->wait(*this, until);
}
inline int pool_ticket::native_handle() { return core->event_fd(*this); }
inline void pool_ticket::kill(int sig) { core->kill(*this, sig); }

} // namespace detail
} // namespace forksafe

#endif // FORKSAFE_DETAIL_POOL_CORE_HPP
