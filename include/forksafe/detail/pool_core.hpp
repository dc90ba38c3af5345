// SPDX-License-Identifier: MIT
//
// forksafe/detail/pool_core.hpp: a process_pool's parent side: the tasks
// (each a result_source its process_result waits on), the queue, the
// workers and the supervisor thread that watches them. The workers' side is
// detail/pool_worker.hpp; the design is in docs/design.md.

#ifndef FORKSAFE_DETAIL_POOL_CORE_HPP
#define FORKSAFE_DETAIL_POOL_CORE_HPP

#include "child_process.hpp"
#include "config.hpp"
#include "deadlines.hpp"
#include "eventfd.hpp"
#include "fd_passing.hpp"
#include "futex.hpp"
#include "loaded_objects.hpp"
#include "owner_process.hpp"
#include "pool_worker.hpp"
#include "result_source.hpp"
#include "shared_region.hpp"
#include "system_errors.hpp"
#include "unique_fd.hpp"

#include <algorithm> // std::min, std::none_of
#include <array>     // the request bytes
#include <atomic>    // the tickets' words
#include <chrono>    // deadlines
#include <climits>   // INT_MAX
#include <cstddef>   // std::size_t
#include <cstdint>   // std::uint32_t
#include <cstring>   // std::memcpy
#include <deque>     // the queue
#include <memory>    // std::shared_ptr
#include <mutex>     // the pool's lock (parent side only)
#include <new>       // placement new: forgetting the supervisor's handle in a forked process
#include <optional>  // pool_limits::task_timeout
#include <stdexcept> // std::logic_error
#include <thread>    // the supervisor
#include <vector>    // workers

#include <poll.h>       // ppoll: the supervisor's wait
#include <sys/socket.h> // socketpair
#include <unistd.h>     // close

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// What process_pool's pool_options say, as the core uses it.
struct pool_limits {
  std::optional<std::chrono::nanoseconds> task_timeout{};
  std::size_t max_tasks_per_worker = 0;
  std::chrono::nanoseconds shutdown_deadline = std::chrono::seconds(5);
};

class pool_core;

/// One task, parent side. Written under the pool's lock; the outcome
/// (remote_result's fields) is published by done (release) and read after it
/// (acquire).
struct pool_ticket final : result_source {
  std::atomic<std::uint32_t> done{0}; // 1: the outcome is known (a private futex)
  std::atomic<int> slot{-1};          // the worker slot running it, -1 while queued or done
  std::atomic<pid_t> worker_pid{-1};  // the worker that runs or ran it, -1 while queued
  std::shared_ptr<pool_core> core;    // what waits for it, kills it, signals it
  pool_invoke_fn invoke = nullptr;
  std::size_t request_size = 0;
  std::size_t result_bytes = 0; // > 0: the result is built in `region`
  alignas(wire_alignment)
      std::array<unsigned char, pool_request_capacity> request; // only request_size bytes are meaningful
  shared_region args;        // a request larger than `request`, in a memfd sent to the worker (reused)
  std::size_t args_size = 0; // bytes of `args` the request takes
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point assigned_at{}; // handed to its worker
  unique_fd event_fd;                                  // made on demand for native_handle()
  bool kill_requested = false;                         // kill() was called on it (under the pool's lock)
  bool requeued = false;                               // went back to the queue once: a second time it fails instead

  // User-provided, so make_shared does not zero the 5 KiB of buffers first:
  // only the bytes a task writes are ever read.
  pool_ticket() noexcept {} // NOLINT(modernize-use-equals-default)
  inline bool wait(std::chrono::steady_clock::time_point until) override;
  [[nodiscard]] pid_t pid() const noexcept override { return worker_pid.load(std::memory_order_relaxed); }
  inline int native_handle() override;
  inline void kill(int sig) noexcept override;
};

class pool_core : public std::enable_shared_from_this<pool_core> {
public:
  pool_core(std::size_t workers, const pool_limits& limits) : options_(limits), workers_(workers) { owner_.set(); }
  pool_core(const pool_core&) = delete;
  pool_core& operator=(const pool_core&) = delete;
  // The last handle went: no other thread uses the core (but a supervisor that could not be joined: supervisor_,
  // destroyed first, then calls std::terminate), so no lock; only a half-started pool has workers left here.
  ~pool_core() {
    if (!owner_.here()) forget_in_forked_process();
    if (owner_.here() && !supervisor_.joinable()) end_workers();
  }

  void start() {
    slots_ = shared_region(sizeof(pool_slot) * workers_.size());
    for (std::size_t i = 0; i < workers_.size(); ++i) new (&slot(i)) pool_slot();
    events_fd_ = unique_fd(make_eventfd());
    wake_fd_ = unique_fd(make_eventfd());
    loaded_.record();
    for (std::size_t i = 0; i < workers_.size(); ++i) spawn(i); // undone by ~pool_core if one throws
    supervisor_ = std::thread([this] { supervise(); });
  }

  [[nodiscard]] std::size_t size() const noexcept { return workers_.size(); }

  /// A task not yet queued: fill in its request (ticket->request, or a
  /// memfd in ticket->args), then enqueue() it.
  std::shared_ptr<pool_ticket> make_ticket(pool_invoke_fn invoke, std::size_t result_bytes, const void* code) {
    if (!owner_.here()) {
      throw std::logic_error("forksafe::process_pool::submit: called in a process forked from the pool's "
                             "owner; the workers belong to the owner");
    }
    loaded_.check(reinterpret_cast<const void*>(invoke));
    if (code != nullptr) loaded_.check(code);
    auto t = std::make_shared<pool_ticket>();
    t->core = shared_from_this();
    t->invoke = invoke;
    t->result_bytes = result_bytes;
    if (result_bytes != 0) t->region = shared_region::memfd(result_bytes);
    return t;
  }

  /// A mapped memfd of at least `bytes` for a large request (see spare_args_).
  shared_region take_args_region(std::size_t bytes) { return spare_args_.take(bytes); }

  void enqueue(const std::shared_ptr<pool_ticket>& t) {
    std::lock_guard lock(mutex_);
    if (stopping_) throw std::logic_error("forksafe::process_pool::submit: the pool has been shut down");
    queue_.push_back(t);
    dispatch();
  }

  /// Waits until `t`'s outcome is known or `until`; true if known.
  bool wait(pool_ticket& t, std::chrono::steady_clock::time_point until) {
    using namespace std::chrono_literals;
    // Checked before mutex_, which a forked process may have inherited locked.
    if (!owner_.here()) {
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
      futex_wait(sl.response_seq, seen, &slice, true);
      sl.parent_waiting.fetch_sub(1, std::memory_order_relaxed);
      collect_if_answered(static_cast<std::size_t>(s), &t);
    }
    return true;
  }

  /// A descriptor that turns readable once `t` is done.
  int event_fd(pool_ticket& t) {
    if (!owner_.here()) return -1; // see wait()
    std::lock_guard lock(mutex_);
    if (!t.event_fd) {
      t.event_fd = unique_fd(make_eventfd());
      if (t.done.load(std::memory_order_acquire) != 0) ring(t.event_fd.get());
    }
    return t.event_fd.get();
  }

  /// Sends `sig` to the worker running `t`, if it runs.
  void kill(pool_ticket& t, int sig) {
    if (!owner_.here()) return; // see wait()
    std::lock_guard lock(mutex_);
    const int s = t.slot.load(std::memory_order_relaxed);
    if (s >= 0 && workers_[static_cast<std::size_t>(s)].task.get() == &t) {
      t.kill_requested = true; // its worker's death is its end, even before the worker took it
      workers_[static_cast<std::size_t>(s)].proc.kill(sig);
    }
  }

  void shutdown() {
    if (!owner_.here()) {
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
    ring(wake_fd_.get());
    supervisor_.join();
    std::lock_guard lock(mutex_);
    end_workers();
  }

private:
  struct worker {
    child_process proc;
    unique_fd socket;                  // parent's end of the socketpair
    std::shared_ptr<pool_ticket> task; // running here
    std::uint32_t answered = 0;        // response_seq already collected
    std::size_t tasks_run = 0;
    bool retiring = false;                              // told to exit; replaced when it has
    std::chrono::steady_clock::time_point respawn_at{}; // a failed replacement is tried again then
  };

  static constexpr std::chrono::seconds replacement_prepare_limit{1};
  static constexpr std::chrono::milliseconds respawn_delay{10};

  pool_slot& slot(std::size_t i) const noexcept { return static_cast<pool_slot*>(slots_.data())[i]; }

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
  void spawn(std::size_t i,
             std::chrono::steady_clock::time_point prepare_by = std::chrono::steady_clock::time_point::max()) {
    std::array<int, 2> fds{};
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds.data()) != 0) {
      throw_errno(errno, "forksafe::process_pool: socketpair failed");
    }
    unique_fd parent_end(fds[0]);
    unique_fd worker_end(fds[1]);
    pool_slot* sl = &slot(i);
    // Constructed once in start(): a caller may still be leaving a wait on
    // this slot (parent_waiting), so only the sequence words start over.
    sl->request_seq.store(0, std::memory_order_relaxed);
    sl->taken_seq.store(0, std::memory_order_relaxed);
    sl->response_seq.store(0, std::memory_order_relaxed);
    const int events = events_fd_.get();
    const pid_t parent = ::getpid();
    spawn_options options;
    options.default_all_handlers = true; // a worker is a process of its own
    options.prepare_deadline = prepare_by;
    child_process proc = child_process::spawn(
        [sl, socket = worker_end.get(), other = parent_end.get(), events, parent]() noexcept {
          ::close(other);
          return pool_worker_main(*sl, socket, events, parent);
        },
        options);
    worker_end.reset(); // the worker's now
    std::lock_guard lock(mutex_);
    worker& w = workers_[i];
    w.proc = std::move(proc);
    w.socket = std::move(parent_end);
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
    sl.request_size = static_cast<std::uint32_t>(t->request_size);
    std::memcpy(sl.request.data(), t->request.data(), t->request_size);
    sl.args_size = t->args_size;
    sl.region_size = static_cast<std::uint32_t>(t->result_bytes != 0 ? t->region.size() : 0);
    const int sock = w.socket.get();
    if ((sl.args_size != 0 && !send_fd(sock, t->args.fd())) ||
        (sl.region_size != 0 && !send_fd(sock, t->region.fd()))) {
      // The worker is gone, or its socket is (a task closed it): tell it to
      // exit (the supervisor replaces it) and requeue the task, once; a
      // second failure is not the worker's doing: fail the task (lost).
      retire(i);
      if (!requeue_once(t)) finish(*t);
      return;
    }
    t->worker_pid.store(w.proc.pid(), std::memory_order_relaxed);
    t->assigned_at = std::chrono::steady_clock::now();
    t->deadline = options_.task_timeout ? deadline_after(t->assigned_at, *options_.task_timeout)
                                        : std::chrono::steady_clock::time_point::max();
    t->slot.store(static_cast<int>(i), std::memory_order_release);
    // The supervisor sleeps until the earliest deadline it knew of: tell it
    // of this one (only when there are timeouts).
    if (t->deadline != std::chrono::steady_clock::time_point::max()) ring(wake_fd_.get());
    w.task = std::move(t);
    sl.request_seq.fetch_add(1, std::memory_order_release);
    futex_wake(sl.request_seq, 1, true);
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

  // Under mutex_: publishes the outcome and wakes the waiters. A large
  // request's memfd is kept for the next one: no worker reads it any more.
  void finish(pool_ticket& t) {
    if (t.args.fd() >= 0) spare_args_.give(std::move(t.args));
    t.slot.store(-1, std::memory_order_relaxed);
    t.done.store(1, std::memory_order_release);
    futex_wake(t.done, INT_MAX);
    if (t.event_fd) ring(t.event_fd.get());
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
    std::memcpy(t.frame.data(), sl.response.data(), t.frame_size);
    if (t.frame_size >= sizeof(frame_header)) {
      frame_header h;
      std::memcpy(&h, t.frame.data(), sizeof h);
      if (h.kind == frame_kind::value_in_memfd)
        t.value_fd = unique_fd(receive_tagged_fd(w.socket.get(), value_fd_tag(seq)));
    }
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
    futex_wake(sl.request_seq, 1, true);
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
        futex_wake(sl.response_seq, INT_MAX, true); // a caller waiting on the slot goes back to the ticket
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
      futex_wake(slot(i).response_seq, INT_MAX, true); // a caller waiting on the slot looks again
    }
    return true;
  }

  using clock = std::chrono::steady_clock;

  // The supervisor: waits for a worker's end, an answer nobody collects, a
  // task's deadline or a wake-up; then deals with what happened.
  void supervise() {
    std::vector<pollfd> fds;
    std::vector<std::size_t> replace;
    for (;;) {
      clock::time_point wake_at;
      if (!watch(fds, wake_at)) return;
      sleep_until(fds, wake_at);
      if (!handle_events(replace)) return;
      replace_workers(replace);
      std::lock_guard lock(mutex_);
      dispatch();
    }
  }

  // What to wait for: the two eventfds and every worker's pidfd, until the
  // earliest deadline (a task's, a retry's, shutdown's). False when the pool
  // is stopping and nothing is left to do.
  bool watch(std::vector<pollfd>& fds, clock::time_point& wake_at) {
    wake_at = clock::time_point::max();
    fds.clear();
    fds.push_back({wake_fd_.get(), POLLIN, 0});
    fds.push_back({events_fd_.get(), POLLIN, 0});
    std::lock_guard lock(mutex_);
    bool blind = false; // a live worker without a pidfd: its end wakes nothing
    for (const worker& w : workers_) {
      fds.push_back({w.proc.valid() ? w.proc.native_handle() : -1, POLLIN, 0});
      if (w.task) wake_at = std::min(wake_at, w.task->deadline);
      if (!w.proc.valid() && w.respawn_at != clock::time_point{}) wake_at = std::min(wake_at, w.respawn_at);
      blind = blind || (w.proc.valid() && w.proc.native_handle() < 0 && !w.proc.status().ended());
    }
    // Without pidfds (Linux before 5.3, a seccomp filter, valgrind) the
    // supervisor looks at its workers every 10 ms instead.
    if (blind) wake_at = std::min(wake_at, clock::now() + std::chrono::milliseconds(10));
    if (stopping_) {
      if (queue_.empty() &&
          std::none_of(workers_.begin(), workers_.end(), [](const worker& w) { return bool(w.task); })) {
        return false;
      }
      wake_at = std::min(wake_at, stop_by_);
    }
    return true;
  }

  void sleep_until(std::vector<pollfd>& fds, clock::time_point wake_at) {
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
    drain(wake_fd_.get());
    drain(events_fd_.get());
  }

  // Collects answers, kills tasks past their deadline, buries workers that
  // ended and lists the slots to fork again. False once shutdown's deadline
  // passed (everything left is stopped).
  bool handle_events(std::vector<std::size_t>& replace) {
    replace.clear();
    std::lock_guard lock(mutex_);
    const auto t = clock::now();
    const bool want_workers = !stopping_ || !queue_.empty();
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      worker& w = workers_[i];
      collect(i);
      if (!w.proc.valid()) {
        if (w.respawn_at <= t && want_workers) replace.push_back(i); // a failed replacement, due again
        continue;
      }
      bool ended = false;
      if (w.task && t >= w.task->deadline) {
        ended = bury(i, w.proc.kill_and_reap(SIGKILL), true);
      } else if (w.proc.poll().ended()) {
        ended = bury(i, w.proc.status(), false);
      }
      if (ended && want_workers) replace.push_back(i);
    }
    if (stopping_ && t >= stop_by_) {
      for (std::size_t i = 0; i < workers_.size(); ++i) {
        if (workers_[i].task) bury(i, workers_[i].proc.kill_and_reap(SIGKILL), true);
      }
      cancel_queued();
      return false;
    }
    return true;
  }

  void replace_workers(const std::vector<std::size_t>& replace) {
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
    for (worker& w : workers_) w.socket.reset();
    events_fd_.reset();
    wake_fd_.reset();
  }

  // Under mutex_ (or alone: ~pool_core): tells every worker to exit, waits
  // until stop_by_, then kills the rest. Closes everything. Cannot fail.
  void end_workers() noexcept {
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      if (workers_[i].proc.valid() && !workers_[i].proc.status().ended()) retire(i);
    }
    const auto until = stopping_ ? stop_by_ : clock::now();
    for (worker& w : workers_) w.proc.end_by(std::max(until, clock::now() + std::chrono::milliseconds(100)));
    cancel_queued();
    close_descriptors();
    // The slots stay mapped until the core is destroyed: a thread still in
    // wait() on a task of this pool may be reading its slot (every ticket
    // holds the core).
  }

  pool_limits options_;
  shared_region slots_;
  std::mutex mutex_;
  std::deque<std::shared_ptr<pool_ticket>> queue_;
  // Large requests' memfds, for reuse: their pages are there already, in
  // this process and (mapped still) in the worker that read one last.
  spare_regions spare_args_;
  std::vector<worker> workers_;
  loaded_objects loaded_; // what the workers have mapped
  unique_fd events_fd_;   // workers write to it when nobody waits for their answer
  unique_fd wake_fd_;     // submitters and shutdown() wake the supervisor
  bool stopping_ = false;
  std::chrono::steady_clock::time_point stop_by_{};
  owner_process owner_;    // the process that made the pool: the workers' parent
  bool forgotten_ = false; // forget_in_forked_process ran (in a forked process)
  std::mutex shutdown_mutex_;
  std::thread supervisor_;
};

inline bool pool_ticket::wait(std::chrono::steady_clock::time_point until) {
  return done.load(std::memory_order_acquire) != 0 || core->wait(*this, until);
}
inline int pool_ticket::native_handle() { return core->event_fd(*this); }
inline void pool_ticket::kill(int sig) noexcept {
  try {
    core->kill(*this, sig);
  } catch (...) {
    // Locking the pool failed (std::system_error): nothing was signalled.
  }
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_POOL_CORE_HPP
