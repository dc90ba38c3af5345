// SPDX-License-Identifier: MIT
// atfork_registry: ordering, backing out, lock-order inversion, add/remove
// from anywhere, fork_generation, errno, throwing handlers, no growth, and
// one registry across shared libraries. Every test forks for real.

#include <forksafe/atfork_registry.hpp>
#include <forksafe/doctest.hpp> // FORKSAFE_CHECK_DEATH: how a child that forks with a throwing handler ends

#include "support/fork_harness.hpp"

#include <atomic>  // counters shared with threads
#include <cerrno>  // errno checks
#include <cstring> // std::strcmp
#include <fstream> // /proc/self/status
#include <mutex>   // std::mutex: what users protect
#include <string>  // log comparisons
#include <thread>  // storms and lock holders
#include <vector>  // threads

#include <dlfcn.h>        // dlopen of the second library
#include <fcntl.h>        // O_NONBLOCK
#include <sys/resource.h> // RLIMIT_NPROC
#include <unistd.h>       // fork, pipe

using namespace std::chrono_literals;
using forksafe::atfork_registry;
using forksafe_test::kind;
using forksafe_test::run_in_child;

namespace {

// A log the handlers append to without allocating (a fork must not).
struct event_log {
  char text[256] = {};
  std::size_t n = 0;
  void add(const char* s) {
    while (*s != '\0' && n + 1 < sizeof text) text[n++] = *s++;
    text[n] = '\0';
  }
  void clear() { n = 0, text[0] = '\0'; }
};
event_log events;

auto logger(const char* s) {
  return [s] { events.add(s); };
}

// Runs a multithreaded scenario inside a sandbox child, so a scenario that
// deadlocks is reported as timed out instead of hanging the suite.
template <class Scenario>
forksafe_test::outcome sandboxed(Scenario scenario, std::chrono::milliseconds deadline) {
  return run_in_child(scenario, deadline);
}

long rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string key;
  long value = 0;
  while (status >> key) {
    if (key == "VmRSS:") {
      status >> value;
      return value;
    }
    status.ignore(1 << 12, '\n');
  }
  return -1;
}

} // namespace

TEST_CASE("atfork_registry: runs prepare newest first, parent and child oldest first" *
          doctest::test_suite("memcheck")) {
  events.clear();
  auto a = atfork_registry::instance().add(logger("pA "), logger("PA "), logger("cA "));
  auto b = atfork_registry::instance().add(logger("pB "), logger("PB "), logger("cB "));
  auto c = atfork_registry::instance().add(logger("pC "), logger("PC "), logger("cC "));
  const auto outcome = run_in_child([] { return std::strcmp(events.text, "pC pB pA cA cB cC ") == 0 ? 0 : 1; });
  CHECK(outcome.exited_with(0));
  CHECK(std::string(events.text) == "pC pB pA PA PB PC ");
}

TEST_CASE("atfork_registry: empty and null handlers are accepted and skipped" * doctest::test_suite("memcheck")) {
  events.clear();
  void (*no_function)() = nullptr;
  auto a = atfork_registry::instance().add({}, nullptr, std::function<void()>{});
  auto b = atfork_registry::instance().add(no_function, logger("P "), {});
  auto c = atfork_registry::instance().add([] { return true; }, {}, {});
  CHECK(run_in_child([] {}).exited_with(0));
  CHECK(std::string(events.text) == "P ");
}

TEST_CASE("atfork_registry: a refused prepare undoes the pass newest-prepared first and retries" *
          doctest::test_suite("memcheck")) {
  events.clear();
  int refusals = 2;
  auto a = atfork_registry::instance().add(logger("pA "), logger("PA "), nullptr);
  auto b = atfork_registry::instance().add(
      [&] {
        if (refusals-- > 0) {
          events.add("pB! ");
          return false;
        }
        events.add("pB ");
        return true;
      },
      logger("PB "), nullptr);
  auto c = atfork_registry::instance().add(logger("pC "), logger("PC "), nullptr);
  auto d = atfork_registry::instance().add(logger("pD "), logger("PD "), nullptr);
  CHECK(run_in_child([] {}).exited_with(0));
  // The undo calls the prepared entries' parent handlers newest first, as
  // folly does (its AtForkList test prepare_parent_return_false): D, then C.
  CHECK(std::string(events.text) == "pD pC pB! PD PC pD pC pB! PD PC pD pC pB pA PA PB PC PD ");
}

TEST_CASE("atfork_registry: size() counts live entries and handles unregister on destruction" *
          doctest::test_suite("memcheck")) {
  const auto before = atfork_registry::instance().size();
  {
    auto a = atfork_registry::instance().add(nullptr, nullptr, nullptr);
    auto b = atfork_registry::instance().add(nullptr, nullptr, nullptr);
    CHECK(atfork_registry::instance().size() == before + 2);
    auto moved = std::move(a);
    CHECK_FALSE(a);
    CHECK(moved);
    b.reset();
    CHECK_FALSE(b);
    CHECK(atfork_registry::instance().size() == before + 1);
  }
  CHECK(atfork_registry::instance().size() == before);
}

// Two locks, a thread that takes A then B; handlers registered A then B, so
// prepare runs B's handler first: the order that inverts the thread's.
struct inversion {
  std::mutex a, b;
  std::atomic<bool> stop{false};
  std::thread spinner() {
    return std::thread([this] {
      while (!stop.load(std::memory_order_relaxed)) {
        a.lock();
        std::this_thread::sleep_for(20us);
        b.lock(); // holds A, wants B
        b.unlock();
        a.unlock();
        std::this_thread::sleep_for(20us); // a window in which neither is held
      }
    });
  }
};

int fork_many_checking_locks_free(inversion& s, int forks) {
  for (int i = 0; i < forks; ++i) {
    const auto child = run_in_child(
        [&] {
          const bool free = s.a.try_lock() && s.b.try_lock();
          return free ? 0 : 1;
        },
        5s);
    if (!child.exited_with(0)) return 2;
  }
  return 0;
}

TEST_CASE("atfork_registry: try-lock handlers survive a lock-order inversion: 1,000 forks, locks free in every child") {
  const auto outcome = sandboxed(
      [] {
        inversion s;
        auto ha = atfork_registry::instance().add([&] { return s.a.try_lock(); }, [&] { s.a.unlock(); },
                                                  [&] { s.a.unlock(); });
        auto hb = atfork_registry::instance().add([&] { return s.b.try_lock(); }, [&] { s.b.unlock(); },
                                                  [&] { s.b.unlock(); });
        std::thread t = s.spinner();
        const int rc = fork_many_checking_locks_free(s, 1000);
        s.stop = true;
        t.join();
        return rc;
      },
      60s);
  CHECK(outcome.exited_with(0));
}

TEST_CASE("atfork_registry: blocking handlers in the inverted order deadlock the fork (negative control)") {
  // One fork, made certain to deadlock: the thread holds A and takes B only
  // once B's prepare holds B; A's prepare (it runs after B's: newer first)
  // then waits for A for ever.
  const auto outcome = forksafe_test::run_in_child_expected_to_hang(
      [] {
        std::mutex a, b;
        std::atomic<bool> a_held{false}, b_taken{false};
        auto ha = atfork_registry::instance().add([&] { a.lock(); }, [&] { a.unlock(); }, [&] { a.unlock(); });
        auto hb = atfork_registry::instance().add(
            [&] {
              b.lock();
              b_taken = true;
            },
            [&] { b.unlock(); }, [&] { b.unlock(); });
        std::thread t([&] {
          std::lock_guard la(a);
          a_held = true;
          while (!b_taken) std::this_thread::yield();
          std::lock_guard lb(b); // holds A, wants B
        });
        while (!a_held) std::this_thread::yield();
        const int rc = run_in_child([] { return 0; }).exited_with(0) ? 0 : 1;
        t.join();
        return rc;
      },
      2s);
  // Under TSan its deadlock detector may see both lock orders before the
  // deadlock happens and end the sandbox with a lock-order-inversion report
  // (SIGABRT, halt_on_error): the same deadlock, caught by another judge.
  // Everywhere else only the harness's deadline counts.
  const bool tsan_saw_it = FORKSAFE_TEST_TSAN && outcome.killed_by(SIGABRT);
  CHECK((outcome.how == kind::timed_out || tsan_saw_it));
}

TEST_CASE("atfork_registry: add/remove storms from 3 threads during 1,000 forks keep handlers balanced") {
  const auto outcome = sandboxed(
      [] {
        std::atomic<long> prepared{0}, parented{0};
        std::atomic<bool> stop{false};
        std::vector<std::thread> stormers;
        for (int t = 0; t < 3; ++t) {
          stormers.emplace_back([&] {
            while (!stop.load(std::memory_order_relaxed)) {
              auto h = atfork_registry::instance().add([&] { prepared.fetch_add(1); }, [&] { parented.fetch_add(1); },
                                                       nullptr);
              std::this_thread::yield();
            }
          });
        }
        int bad = 0;
        for (int i = 0; i < 1000; ++i) bad += run_in_child([] {}, 5s).exited_with(0) ? 0 : 1;
        stop = true;
        for (auto& t : stormers) t.join();
        return bad == 0 && prepared.load() == parented.load() ? 0 : 1;
      },
      60s);
  CHECK(outcome.exited_with(0));
}

TEST_CASE("atfork_registry: removing from another thread during a fork waits until the fork has finished") {
  std::atomic<bool> in_prepare{false};
  std::atomic<bool> parent_ran{false};
  std::atomic<bool> parent_ran_before_reset_returned{false};
  std::atomic<pid_t> remover_id{0};
  auto h = atfork_registry::instance().add(
      [&] {
        in_prepare = true;
        // Until the remover is seen asleep in reset() (allocates nothing; the
        // limit is only a fallback against a hang).
        (void)forksafe_test::wait_until_blocked(remover_id.load());
      },
      [&] { parent_ran = true; }, nullptr);
  std::thread remover([&] {
    remover_id = forksafe_test::current_thread_id();
    while (!in_prepare) std::this_thread::yield();
    h.reset();
    parent_ran_before_reset_returned = parent_ran.load();
  });
  CHECK(run_in_child([] {}).exited_with(0));
  remover.join();
  CHECK(parent_ran_before_reset_returned);
}

TEST_CASE("atfork_registry: add and remove inside a handler neither deadlock nor unbalance" *
          doctest::test_suite("memcheck")) {
  events.clear();
  static forksafe::atfork_handle added, w, z;
  z = atfork_registry::instance().add(logger("pZ "), logger("PZ "), logger("cZ "));
  auto x = atfork_registry::instance().add(
      [] {
        events.add("pX ");
        w.reset(); // already prepared in this fork: its parent runs now, inside the removal
        z.reset(); // not yet prepared: never called
        if (!added) added = atfork_registry::instance().add(logger("pY "), logger("PY "), logger("cY "));
      },
      logger("PX "), logger("cX "));
  w = atfork_registry::instance().add(logger("pW "), logger("PW "), logger("cW "));
  // W's parent ran before fork(), so the child has it too and gets no cW.
  const auto outcome = run_in_child([] { return std::strcmp(events.text, "pW pX PW cX ") == 0 ? 0 : 1; });
  CHECK(outcome.exited_with(0));
  CHECK(std::string(events.text) == "pW pX PW PX ");
  events.clear();
  CHECK(run_in_child([] {}).exited_with(0));
  CHECK(std::string(events.text) == "pY pX PX PY ");
  added.reset();
}

TEST_CASE("fork_generation: 0 in the parent, 1 in a child, 2 in a grandchild" * doctest::test_suite("memcheck")) {
  CHECK(forksafe::fork_generation() == 0);
  const auto outcome = run_in_child([] {
    if (forksafe::fork_generation() != 1) return 1;
    const auto grandchild = run_in_child([] { return forksafe::fork_generation() == 2 ? 0 : 1; });
    return grandchild.exited_with(0) ? 0 : 2;
  });
  CHECK(outcome.exited_with(0));
  CHECK(forksafe::fork_generation() == 0);
}

TEST_CASE("atfork_registry: errno after the handlers is what it was before them" * doctest::test_suite("memcheck")) {
  auto h = atfork_registry::instance().add([] { errno = EIO; }, [] { errno = EIO; }, [] { errno = EIO; });
  errno = 0;
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(errno == 0 ? 0 : 1);
  CHECK(errno == 0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("atfork_registry: a failing fork keeps fork's own errno through the parent handlers") {
  // RLIMIT_NPROC binds only unprivileged users: drop to nobody in a child first.
  const auto outcome = run_in_child([] {
    auto h = atfork_registry::instance().add([] { errno = EIO; }, [] { errno = EIO; }, nullptr);
    if (::getuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return 3;
    const rlimit none{0, 0};
    if (::setrlimit(RLIMIT_NPROC, &none) != 0) return 4;
    errno = 0;
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    return pid < 0 && errno == EAGAIN ? 0 : 1;
  });
  CHECK(outcome.exited_with(0));
}

TEST_CASE("atfork_registry: a handler that throws ends the process with a message naming the registry") {
  const auto fork_with_a_throwing_handler = [] {
    auto h = atfork_registry::instance().add([] { throw std::runtime_error("no"); }, nullptr, nullptr);
    (void)run_in_child([] {});
  };
  FORKSAFE_CHECK_SIGNALED(fork_with_a_throwing_handler(), SIGABRT);
  FORKSAFE_CHECK_DEATH(fork_with_a_throwing_handler(),
                       "forksafe::atfork_registry: the prepare handler of '\\(unnamed\\)' threw: no");
}

TEST_CASE("atfork_registry: 1,000,000 registrations and removals leave size and memory where they were") {
  auto& r = atfork_registry::instance();
  const auto size_before = r.size();
  for (int i = 0; i < 1000; ++i) auto h = r.add([] {}, [] {}, [] {}); // warm the allocator
  const long rss_before = rss_kib();
  for (int i = 0; i < 1'000'000; ++i) {
    auto h = r.add([] {}, [] {}, [] {});
  }
  const long rss_after = rss_kib();
  CHECK(r.size() == size_before);
#if FORKSAFE_TEST_ASAN
  // ASan quarantines freed memory, so RSS grows without a leak; there
  // LeakSanitizer checks for leaks at exit instead.
  (void)rss_before, (void)rss_after;
#else
  CHECK(rss_after - rss_before < 1024); // KiB: an entry is ~150 bytes, so a leak would show as ~150 MB
#endif
  CHECK(run_in_child([] {}).exited_with(0));
}

// ---- one registry across shared libraries ---------------------------------

extern "C" {
void* registry_lib_a_address();
void registry_lib_a_register(int fd);
void registry_lib_a_unregister();
}

#ifndef REGISTRY_LIB_B_PATH
#error "the build passes the path of the dlopen'ed test library"
#endif

namespace {
template <class T>
T symbol(void* lib, const char* name) {
  return reinterpret_cast<T>(::dlsym(lib, name));
}
std::string drain(int fd) {
  std::string out;
  char c;
  while (::read(fd, &c, 1) == 1) out += c;
  return out;
}
} // namespace

TEST_CASE("atfork_registry: one registry for the program, a linked and a dlopen'ed library alike") {
  void* lib_b = ::dlopen(REGISTRY_LIB_B_PATH, RTLD_NOW | RTLD_LOCAL);
  REQUIRE(lib_b != nullptr);
  auto b_address = symbol<void* (*)()>(lib_b, "registry_lib_b_address");
  auto b_register = symbol<void (*)(int)>(lib_b, "registry_lib_b_register");
  auto b_unregister = symbol<void (*)()>(lib_b, "registry_lib_b_unregister");
  REQUIRE(static_cast<bool>(b_address));

  CHECK(registry_lib_a_address() == &atfork_registry::instance());
  CHECK(b_address() == &atfork_registry::instance());

  int fds[2];
  REQUIRE(::pipe2(fds, O_NONBLOCK) == 0);
  registry_lib_a_register(fds[1]);
  b_register(fds[1]);
  CHECK(run_in_child([] {}).exited_with(0));
  CHECK(drain(fds[0]) == "ab");

  b_unregister();
  CHECK(::dlclose(lib_b) == 0);
  CHECK(run_in_child([] {}).exited_with(0));
  CHECK(drain(fds[0]) == "a");
  registry_lib_a_unregister();
  ::close(fds[0]);
  ::close(fds[1]);
}

#ifdef REGISTRY_LIB_HIDDEN_PATH
TEST_CASE("atfork_registry: a library built with -fvisibility=hidden still shares the one registry") {
  void* lib = ::dlopen(REGISTRY_LIB_HIDDEN_PATH, RTLD_NOW | RTLD_LOCAL);
  REQUIRE(lib != nullptr);
  auto address = symbol<void* (*)()>(lib, "registry_lib_hidden_address");
  REQUIRE(static_cast<bool>(address));
  CHECK(address() == &atfork_registry::instance());
  ::dlclose(lib);
}
#endif

#ifdef REGISTRY_LIB_V2_PATH
// Two forksafe ABI versions in one process: the plugin's names live in
// forksafe::abi_v2, so no code is merged; its hub has another layout, so it
// keeps a registry of its own and says so once on stderr. Both registries run
// on every fork. In a child: the plugin installs its own pthread_atfork
// handlers and is pinned by them, which must not outlive this test.
TEST_CASE("atfork_registry: a plugin of another ABI version keeps its own registry, says so, and both run") {
  int out[2];
  int err[2];
  REQUIRE(::pipe2(out, O_NONBLOCK) == 0);
  REQUIRE(::pipe2(err, O_NONBLOCK) == 0);
  const auto s = run_in_child([&] {
    ::dup2(err[1], STDERR_FILENO);
    void* lib = ::dlopen(REGISTRY_LIB_V2_PATH, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return 10;
    auto v2_address = symbol<void* (*)()>(lib, "registry_lib_v2_address");
    auto v2_register = symbol<void (*)(int)>(lib, "registry_lib_v2_register");
    if (v2_address == nullptr || v2_register == nullptr) return 11;
    if (v2_address() == &atfork_registry::instance()) return 12; // one registry across layouts: wrong
    const std::size_t before = atfork_registry::instance().size();
    registry_lib_a_register(out[1]);
    v2_register(out[1]);
    if (atfork_registry::instance().size() != before + 1) return 13; // the v2 handler is not in ours
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    int status = 0;
    if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return 14;
    registry_lib_a_unregister();
    return 0;
  });
  CHECK(s.exited_with(0));
  ::close(out[1]);
  ::close(err[1]);
  const std::string ran = drain(out[0]);
  const std::string said = drain(err[0]);
  ::close(out[0]);
  ::close(err[0]);
  INFO("stderr: ", said);
  CHECK(ran.find('a') != std::string::npos); // this registry's child handler, in the grandchild
  CHECK(ran.find('v') != std::string::npos); // the plugin's
  CHECK(said.find("hub ABI 2") != std::string::npos);
  CHECK(said.find("keeps its own fork registry") != std::string::npos);
}
#endif
