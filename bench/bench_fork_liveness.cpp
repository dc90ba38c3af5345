// SPDX-License-Identifier: MIT
//
// fork() latency while other threads are busy with the locks a fork must
// take, per pattern, beside an anchor measured in the same run with samples
// interleaved: median / p99 / max over the forks, and the ratios.
//
// Anchors:
//  - third-party locks (guard): std::scoped_lock taking the same locks from
//    the forking thread, then a bare _Fork() (what a fork that waits for no
//    more than it must costs);
//  - quiesce locks: the time until every critical section in progress when
//    the sample starts has ended (what the fork must wait for at least);
//  - fork_call from 4 threads and a pool worker's replacement: the same by
//    hand, scoped_lock (or the sections' end) + _Fork + pipe + waitpid.
// Targets (docs/benchmarks.md): guard <= 1.5x median and <= 3x p99; quiesce
// <= 2x median and p99; fork_call x4 and replacement <= 2x.
//
// Run: build/<dir>/bench/bench_fork_liveness [--smoke]

#include <forksafe/atfork_registry.hpp>
#include <forksafe/fork_safe_mutex.hpp>
#include <forksafe/process_pool.hpp>
#include <forksafe/process_result.hpp>

#include "bench.hpp"

#include <algorithm>    // std::max
#include <array>        // per-thread section state
#include <atomic>       // stop flags
#include <chrono>       // sections
#include <cstdio>       // std::printf
#include <cstdlib>      // std::abort
#include <memory>       // loads
#include <mutex>        // std::mutex, std::scoped_lock
#include <shared_mutex> // std::shared_lock
#include <string>       // row names
#include <thread>       // holders
#include <vector>       // samples

#include <sys/wait.h> // waitpid
#include <unistd.h>   // fork, _Fork, pipe

using namespace std::chrono_literals;

namespace {

using sample_fn = double (*)(void*);

struct result {
  bench::stats ours, anchor;
};

// A null target_p99: that row's target is on the median only.
void print(const std::string& name, const result& r, const char* target_median, const char* target_p99) {
  const std::string p99_target = target_p99 != nullptr ? std::string(" [<= ") + target_p99 + "]" : std::string();
  std::printf("  %-58s median %9.1f us (anchor %9.1f) ratio %6.2f [<= %s] | p99 %9.1f us (anchor %9.1f) ratio "
              "%6.2f%s | max %9.1f us (anchor %9.1f)\n",
              name.c_str(), r.ours.median / 1e3, r.anchor.median / 1e3, r.ours.median / r.anchor.median, target_median,
              r.ours.p99 / 1e3, r.anchor.p99 / 1e3, r.ours.p99 / r.anchor.p99, p99_target.c_str(), r.ours.max / 1e3,
              r.anchor.max / 1e3);
}

// Interleaves `n` samples of each.
template <class Ours, class Anchor>
result measure(std::size_t n, Ours ours, Anchor anchor) {
  std::vector<double> a, o;
  for (std::size_t i = 0; i < n; ++i) {
    a.push_back(anchor());
    o.push_back(ours());
  }
  return {bench::summarize(std::move(o)), bench::summarize(std::move(a))};
}

void reap(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
}

// Time of fork() itself in the parent; the child exits at once.
double time_fork() {
  const auto t0 = bench::clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  const double ns = static_cast<double>((bench::clock::now() - t0).count());
  reap(pid);
  return ns;
}

// ---- third-party locks ----------------------------------------------------

enum class pause_kind { yield, one_us, hundred_us };

struct third_party_load {
  std::mutex a, b;
  std::atomic<bool> stop{false};
  std::thread t;
  explicit third_party_load(pause_kind p) {
    t = std::thread([this, p] {
      while (!stop.load(std::memory_order_relaxed)) {
        std::lock_guard la(a);
        if (p == pause_kind::yield) {
          std::this_thread::yield();
        } else {
          std::this_thread::sleep_for(p == pause_kind::one_us ? 1us : 100us);
        }
        std::lock_guard lb(b);
      }
    });
  }
  ~third_party_load() {
    stop = true;
    t.join();
  }
  // The anchor: take both with std::lock's algorithm, then a bare fork.
  double anchor_fork() {
    const auto t0 = bench::clock::now();
    pid_t pid;
    {
      std::scoped_lock both(a, b);
      pid = ::_Fork();
      if (pid == 0) ::_exit(0);
    }
    const double ns = static_cast<double>((bench::clock::now() - t0).count());
    reap(pid);
    return ns;
  }
};

void third_party(std::size_t n) {
  bench::title("guard(): two library mutexes, one thread taking A, pausing, taking B (fork() in the parent)");
  for (auto [p, name] : {std::pair{pause_kind::yield, "yield between A and B"},
                         std::pair{pause_kind::one_us, "1 us sleep between A and B"},
                         std::pair{pause_kind::hundred_us, "100 us sleep between A and B"}}) {
    third_party_load load(p);
    auto ga = forksafe::atfork_registry::instance().guard(load.a, "library A");
    auto gb = forksafe::atfork_registry::instance().guard(load.b, "library B");
    const result r = measure(n, time_fork, [&] { return load.anchor_fork(); });
    print(name, r, "1.5", "3");
  }
}

// fork + pipe + waitpid of a 4-byte result, by hand or with fork_call.
template <class Lock>
double hand_call(Lock lock) {
  int fds[2];
  if (::pipe(fds) != 0) std::abort();
  const auto t0 = bench::clock::now();
  pid_t pid;
  {
    [[maybe_unused]] auto held = lock();
    pid = ::_Fork();
    if (pid == 0) {
      const int v = 7;
      (void)!::write(fds[1], &v, sizeof v);
      ::_exit(0);
    }
  }
  int v = 0;
  (void)!::read(fds[0], &v, sizeof v);
  reap(pid);
  const double ns = static_cast<double>((bench::clock::now() - t0).count());
  ::close(fds[0]);
  ::close(fds[1]);
  return ns;
}

double forksafe_call() {
  const auto t0 = bench::clock::now();
  if (forksafe::fork_call([] { return 7; }).get() != 7) std::abort();
  return static_cast<double>((bench::clock::now() - t0).count());
}

// Each of 4 threads takes `n / 4` samples of `one`, interleaved with the anchor.
template <class Ours, class Anchor>
result from_four_threads(std::size_t n, Ours ours, Anchor anchor) {
  std::vector<double> o, a;
  std::mutex m;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      std::vector<double> mo, ma;
      for (std::size_t i = 0; i < n / 4 + 1; ++i) {
        ma.push_back(anchor());
        mo.push_back(ours());
      }
      std::lock_guard l(m);
      o.insert(o.end(), mo.begin(), mo.end());
      a.insert(a.end(), ma.begin(), ma.end());
    });
  }
  for (auto& t : ts) t.join();
  return {bench::summarize(std::move(o)), bench::summarize(std::move(a))};
}

void third_party_calls(std::size_t n) {
  bench::title("under the 100 us pattern: fork_call from 4 threads, a pool worker's replacement");
  third_party_load load(pause_kind::hundred_us);
  auto ga = forksafe::atfork_registry::instance().guard(load.a, "library A");
  auto gb = forksafe::atfork_registry::instance().guard(load.b, "library B");
  const auto lock_both = [&] { return std::scoped_lock(load.a, load.b); };
  print("fork_call<int> from 4 threads vs fork + pipe + waitpid by hand",
        from_four_threads(n, forksafe_call, [&] { return hand_call(lock_both); }), "2", nullptr);
  forksafe::process_pool pool(1);
  const auto replacement = [&] {
    auto crash = pool.submit([] {
      std::abort();
      return 0;
    });
    try {
      (void)crash.get();
    } catch (const forksafe::child_error&) {
    }
    const auto t0 = bench::clock::now(); // the worker died: the next task waits for its replacement
    if (pool.submit([](int x) { return x; }, 3).get() != 3) std::abort();
    return static_cast<double>((bench::clock::now() - t0).count());
  };
  print("pool: first task after a crash (a replacement fork) vs by hand",
        measure(n / 4 + 1, replacement, [&] { return hand_call(lock_both); }), "2", nullptr);
}

// ---- quiesce locks ----------------------------------------------------------

// Threads that each loop taking one of `locks` for a section. Each publishes
// a sequence number (odd: inside a section) and, per section, when it ended.
template <class M>
struct quiesce_load {
  static constexpr std::size_t ring = 64;
  std::vector<std::unique_ptr<M>> locks;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  std::array<std::atomic<std::uint64_t>, 8> seq{};
  std::array<std::array<std::atomic<std::int64_t>, ring>, 8> ended{};
  template <class Take>
  quiesce_load(int n_threads, int n_locks, Take take) {
    for (int i = 0; i < n_locks; ++i) locks.push_back(std::make_unique<M>());
    for (int i = 0; i < n_threads; ++i) {
      threads.emplace_back([this, i, take, n_locks] {
        const auto k = static_cast<std::size_t>(i);
        while (!stop.load(std::memory_order_relaxed)) take(*locks[k % static_cast<std::size_t>(n_locks)], i, *this);
      });
    }
    std::this_thread::sleep_for(50ms); // every thread in its rhythm
  }
  ~quiesce_load() {
    stop = true;
    for (auto& t : threads) t.join();
  }
  void enter(int i) { seq[static_cast<std::size_t>(i)].fetch_add(1); }
  void leave(int i) {
    const auto k = static_cast<std::size_t>(i);
    const std::uint64_t s = seq[k].load();
    ended[k][(s / 2) % ring].store(bench::clock::now().time_since_epoch().count());
    seq[k].fetch_add(1);
  }
  // One fork, and beside it its anchor: the time from the fork's start until
  // every section in progress then had ended (what the fork must wait for)
  // plus `bare` (a fork that waits for nothing).
  std::pair<double, double> fork_and_anchor(double bare) {
    std::array<std::uint64_t, 8> at{};
    const auto t0 = bench::clock::now();
    for (std::size_t i = 0; i < threads.size(); ++i) at[i] = seq[i].load();
    const double forked = time_fork_from(t0);
    double remaining = 0;
    for (std::size_t i = 0; i < threads.size(); ++i) {
      if ((at[i] & 1) == 0) continue;
      while (seq[i].load() == at[i]) std::this_thread::sleep_for(20us);
      const std::int64_t end = ended[i][(at[i] / 2) % ring].load();
      remaining = std::max(remaining, static_cast<double>(end - t0.time_since_epoch().count()));
    }
    return {forked, remaining + bare};
  }
  static double time_fork_from(bench::clock::time_point t0) {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    const double ns = static_cast<double>((bench::clock::now() - t0).count());
    reap(pid);
    return ns;
  }
};

template <class Load>
result paired(std::size_t n, Load& load, double bare) {
  std::vector<double> o, a;
  for (std::size_t i = 0; i < n; ++i) {
    const auto [ours, anchor] = load.fork_and_anchor(bare);
    o.push_back(ours);
    a.push_back(anchor);
  }
  return {bench::summarize(std::move(o)), bench::summarize(std::move(a))};
}

template <class M, class Load>
void section(M& m, std::chrono::microseconds hold, int i, Load& load) {
  std::lock_guard l(m);
  load.enter(i);
  std::this_thread::sleep_for(hold);
  load.leave(i);
}

double bare_fork_median(std::size_t n) {
  std::vector<double> v;
  for (std::size_t i = 0; i < n; ++i) {
    const auto t0 = bench::clock::now();
    const pid_t pid = ::_Fork();
    if (pid == 0) ::_exit(0);
    v.push_back(static_cast<double>((bench::clock::now() - t0).count()));
    reap(pid);
  }
  return bench::summarize(std::move(v)).median;
}

void quiesce_patterns(std::size_t n) {
  bench::title("quiesce: fork() while threads are inside long critical sections (anchor: the sections in progress "
               "at the fork's start ending, plus a bare _Fork)");
  const double bare = bare_fork_median(n);
  using exclusive = quiesce_load<forksafe::fork_safe_mutex>;
  {
    exclusive load(4, 1, [](auto& m, int i, exclusive& l) { section(m, 5ms, i, l); });
    print("4 threads queued on one mutex, 5 ms sections", paired(n, load, bare), "2", "2");
  }
  for (int threads : {2, 4}) {
    exclusive load(threads, threads, [threads](auto& m, int i, exclusive& l) {
      section(m, 20ms, i, l);
      std::this_thread::sleep_for(std::chrono::microseconds(20'000 * (i + 1) / threads / 10)); // out of phase
    });
    print(std::to_string(threads) + " threads on their own locks, 20 ms sections out of phase",
          paired(n / 2, load, bare), "2", "2");
  }
  using shared = quiesce_load<forksafe::fork_safe_shared_mutex>;
  shared load(5, 1, [](auto& m, int i, shared& l) {
    if (i == 4) { // the writer, now and then
      section(m, 1ms, i, l);
      std::this_thread::sleep_for(10ms);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5 * i));
    std::shared_lock lk(m);
    l.enter(i);
    std::this_thread::sleep_for(20ms);
    l.leave(i);
  });
  print("4 readers, 20 ms staggered, and a writer", paired(n / 2, load, bare), "2", "2");
}

} // namespace

int main(int argc, char** argv) {
  const bool smoke = bench::smoke(argc, argv);
  const std::size_t n = bench::size(smoke, 200, 8);
  third_party(n);
  third_party_calls(n);
  quiesce_patterns(n);
  return 0;
}
