// SPDX-License-Identifier: MIT
//
// fork_safe_mutex against std::mutex / std::shared_mutex, side by side in one
// run: uncontended lock+unlock, two threads contending, shared reads, sizeof,
// construction + destruction, and fork() latency with 0, 1,000 and 10,000 live
// quiesce mutexes against a bare fork.
//
// It also measures the design not taken for quiesce: a fork gate in the style
// of snmalloc, where every outermost critical section increments and
// decrements one process-wide counter and prefork waits for it to reach zero.
// Targets: uncontended ratio <= 1.0 with a second thread alive (glibc's
// std::mutex takes a non-atomic path while a process has one thread; that
// figure is reported too); contended throughput ratio >= 1.0;
// sizeof not larger; 10,000 quiesce mutexes: fork ratio <= 2.0.

#include <forksafe/fork_safe_mutex.hpp>

#include "bench.hpp"
#include "fork_latency.hpp"

#include <atomic>       // the gate prototype's counter
#include <chrono>       // the idle thread's naps
#include <cstdio>       // std::printf
#include <memory>       // arrays of live mutexes
#include <mutex>        // std::mutex: the anchor
#include <shared_mutex> // std::shared_mutex: the anchor
#include <string>       // labels
#include <thread>       // contention
#include <vector>       // samples

namespace {

using forksafe::basic_fork_safe_mutex;
using forksafe::fork_policy;

// The alternative design for quiesce, reduced to its fast-path cost: a
// process-wide count of threads inside outermost critical sections.
namespace counter_gate {
std::atomic<long> inside{0};
thread_local int depth = 0;
struct mutex {
  forksafe::detail::owner_lock lock_;
  void lock() {
    if (depth++ == 0) inside.fetch_add(1, std::memory_order_acq_rel);
    lock_.lock(forksafe::detail::this_thread_id());
  }
  void unlock() {
    lock_.unlock();
    if (--depth == 0) inside.fetch_sub(1, std::memory_order_release);
  }
};
} // namespace counter_gate

// Keeps the optimiser from deleting a loop's work.
template <class T>
void keep(T& v) {
  asm volatile("" : : "r,m"(v) : "memory");
}

template <class M>
double uncontended_ns_per_op(std::size_t ops) {
  static M m; // static: a quiesce mutex links into the list once
  return bench::time_ns([&] {
           for (std::size_t i = 0; i < ops; ++i) {
             m.lock();
             m.unlock();
           }
         }) /
         static_cast<double>(ops);
}

// Two threads: each takes `m_for(thread)` `ops` times; returns ns per operation.
template <class M>
double contended_ns_per_op(std::size_t ops, bool same_mutex) {
  static M a, b;
  long counter_a = 0, counter_b = 0;
  std::atomic<int> ready{0};
  auto work = [&](M& m, long& counter) {
    ready.fetch_add(1);
    while (ready.load() < 2) {
    }
    for (std::size_t i = 0; i < ops; ++i) {
      m.lock();
      ++counter;
      m.unlock();
    }
  };
  const double ns = bench::time_ns([&] {
    std::thread t(work, std::ref(a), std::ref(same_mutex ? counter_a : counter_b));
    work(same_mutex ? a : b, same_mutex ? counter_a : counter_b);
    t.join();
  });
  keep(counter_a);
  keep(counter_b);
  return ns / static_cast<double>(2 * ops);
}

template <class M>
double shared_read_ns_per_op(std::size_t ops) {
  static M m;
  std::atomic<int> ready{0};
  auto work = [&] {
    ready.fetch_add(1);
    while (ready.load() < 2) {
    }
    for (std::size_t i = 0; i < ops; ++i) {
      m.lock_shared();
      m.unlock_shared();
    }
  };
  const double ns = bench::time_ns([&] {
    std::thread t(work);
    work();
    t.join();
  });
  return ns / static_cast<double>(2 * ops);
}

template <class M>
double construct_destroy_ns(std::size_t n) {
  alignas(M) unsigned char storage[sizeof(M)];
  return bench::time_ns([&] {
           for (std::size_t i = 0; i < n; ++i) {
             M* m = new (storage) M;
             keep(m);
             m->~M();
           }
         }) /
         static_cast<double>(n);
}

// Runs `measure` for each entry, `rounds` times round-robin; one stats each.
struct contender {
  std::string name;
  double (*measure)(std::size_t);
};
std::vector<bench::stats> compare(const std::vector<contender>& cs, std::size_t rounds, std::size_t ops) {
  std::vector<std::vector<double>> samples(cs.size());
  for (std::size_t r = 0; r < rounds; ++r) {
    for (std::size_t i = 0; i < cs.size(); ++i) samples[i].push_back(cs[i].measure(ops));
  }
  std::vector<bench::stats> out;
  for (auto& s : samples) out.push_back(bench::summarize(std::move(s)));
  return out;
}

void report(const char* title, const std::vector<contender>& cs, std::size_t rounds, std::size_t ops,
            const char* target) {
  bench::title(title);
  const auto s = compare(cs, rounds, ops);
  for (std::size_t i = 0; i < cs.size(); ++i) {
    bench::row(cs[i].name, s[i], "ns", 1, i == 0 ? nullptr : &s[0], i == 0 ? "" : target);
  }
}

using q_mutex = basic_fork_safe_mutex<fork_policy::quiesce>;
using r_mutex = basic_fork_safe_mutex<fork_policy::reset>;
using p_mutex = basic_fork_safe_mutex<fork_policy::poison>;

void fork_with_live_mutexes(bool smoke) {
  auto live = [](std::size_t n) {
    return [n]() -> std::shared_ptr<void> { return n ? std::shared_ptr<q_mutex[]>(new q_mutex[n]) : nullptr; };
  };
  const auto s = bench::fork_latency_table("fork + _exit + waitpid with live quiesce mutexes (µs)",
                                           {{"fork(), 0 live quiesce mutexes", live(0)},
                                            {"fork(), 1,000 live quiesce mutexes", live(1000)},
                                            {"fork(), 10,000 live quiesce mutexes", live(10000)}},
                                           smoke);
  std::printf("  10,000 live quiesce mutexes: ratio %.3f [target <= 2.0]\n", s[3].median / s[0].median);
}

} // namespace

int main(int argc, char** argv) {
  const bool smoke = bench::smoke(argc, argv);
  const std::size_t rounds = bench::size(smoke, 15, 2);
  // First, while the process has one thread: once a thread has existed,
  // glibc's fork() takes its multithreaded path (arena locks) and _Fork()
  // does not, which would blur what the mutexes cost.
  fork_with_live_mutexes(smoke);

  const auto uncontended = [&](const char* title, const char* target) {
    report(title,
           {{"std::mutex", uncontended_ns_per_op<std::mutex>},
            {"fork_safe_mutex (quiesce)", uncontended_ns_per_op<q_mutex>},
            {"fork_safe_mutex (reset)", uncontended_ns_per_op<r_mutex>},
            {"fork_safe_mutex (poison)", uncontended_ns_per_op<p_mutex>},
            {"counter fork gate (design not taken)", uncontended_ns_per_op<counter_gate::mutex>}},
           rounds, bench::size(smoke, 2'000'000, 10'000), target);
  };
  // glibc's pthread mutexes skip their atomic instructions while the process
  // has one thread; forksafe's never do. So std::mutex is measured twice:
  // alone, and with a second thread alive, which is the case forksafe is
  // for (a program that forks while threads run).
  uncontended("uncontended lock + unlock, one thread in the process (ns per pair)", "none: glibc's one-thread path");
  std::atomic<bool> done{false};
  std::thread idle([&] {
    while (!done.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  uncontended("uncontended lock + unlock, a second thread alive (ns per pair)", "ratio <= 1.0");
  done = true;
  idle.join();

  auto same = [](auto tag) {
    using M = typename decltype(tag)::type;
    return +[](std::size_t ops) { return contended_ns_per_op<M>(ops, true); };
  };
  auto separate = [](auto tag) {
    using M = typename decltype(tag)::type;
    return +[](std::size_t ops) { return contended_ns_per_op<M>(ops, false); };
  };
  const std::size_t contended_ops = bench::size(smoke, 500'000, 5'000);
  report("two threads, one mutex (ns per lock+unlock; lower = more throughput)",
         {{"std::mutex", same(std::type_identity<std::mutex>{})},
          {"fork_safe_mutex (quiesce)", same(std::type_identity<q_mutex>{})},
          {"fork_safe_mutex (reset)", same(std::type_identity<r_mutex>{})},
          {"counter fork gate (design not taken)", same(std::type_identity<counter_gate::mutex>{})}},
         rounds, contended_ops, "ratio <= 1.0");
  report("two threads, a mutex each (ns per lock+unlock)",
         {{"std::mutex", separate(std::type_identity<std::mutex>{})},
          {"fork_safe_mutex (quiesce)", separate(std::type_identity<q_mutex>{})},
          {"counter fork gate (design not taken)", separate(std::type_identity<counter_gate::mutex>{})}},
         rounds, contended_ops, "");

  report("two threads, shared (read) lock + unlock on one mutex (ns per pair)",
         {{"std::shared_mutex", shared_read_ns_per_op<std::shared_mutex>},
          {"fork_safe_shared_mutex (quiesce)", shared_read_ns_per_op<forksafe::fork_safe_shared_mutex>},
          {"fork_safe_shared_mutex (reset)",
           shared_read_ns_per_op<forksafe::basic_fork_safe_shared_mutex<fork_policy::reset>>}},
         rounds, contended_ops, "");

  report("construction + destruction (ns)",
         {{"std::mutex", construct_destroy_ns<std::mutex>},
          {"fork_safe_mutex (quiesce)", construct_destroy_ns<q_mutex>},
          {"fork_safe_mutex (reset)", construct_destroy_ns<r_mutex>},
          {"fork_safe_mutex (poison)", construct_destroy_ns<p_mutex>},
          {"fork_safe_shared_mutex (quiesce)", construct_destroy_ns<forksafe::fork_safe_shared_mutex>}},
         rounds, bench::size(smoke, 200'000, 1'000), "");

  bench::title("sizeof (bytes)");
  bench::fact("std::mutex", std::to_string(sizeof(std::mutex)));
  bench::fact("fork_safe_mutex (quiesce / reset / poison)",
              std::to_string(sizeof(q_mutex)) + " / " + std::to_string(sizeof(r_mutex)) + " / " +
                  std::to_string(sizeof(p_mutex)) + " [target: not larger]");
  bench::fact("std::shared_mutex", std::to_string(sizeof(std::shared_mutex)));
  bench::fact("fork_safe_shared_mutex (quiesce / reset / poison)",
              std::to_string(sizeof(forksafe::fork_safe_shared_mutex)) + " / " +
                  std::to_string(sizeof(forksafe::basic_fork_safe_shared_mutex<fork_policy::reset>)) + " / " +
                  std::to_string(sizeof(forksafe::basic_fork_safe_shared_mutex<fork_policy::poison>)));
  return 0;
}
