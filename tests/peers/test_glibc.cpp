// SPDX-License-Identifier: MIT
// glibc's fork handler and fork tests, ported to forksafe:
//   posix/ (sysdeps/pthread/ since 2.34) tst-atfork1 .. tst-atfork4, with
//   their modules as small plugins (glibc_atfork{2,3,4}mod.cpp) that this
//   executable, which exports none of forksafe's symbols, dlopens;
//   nptl/ tst-fork1 .. tst-fork4.
// malloc/tst-mallocfork* live in test_glibc_malloc.cpp (a process of their
// own: glibc's fork is async-signal-safe only in a process that never had a
// second thread).
//
// pthread_atfork becomes atfork_registry::instance().add(); what glibc's
// tests check with exit codes, the sandboxes here note through a pipe.

#include <forksafe/atfork_registry.hpp>
#include <forksafe/process_result.hpp>

#include "peer_support.hpp"

#include <atomic>  // counters, the keep-alive thread
#include <csignal> // SIGTERM, pthread_kill
#include <string>  // expected logs
#include <thread>  // the threads of tst-fork1..3, the keep-alive thread
#include <vector>  // tst-fork1's threads

#include <dlfcn.h>   // the modules
#include <pthread.h> // pthread_atfork, pthread_kill
#include <unistd.h>  // getppid

#if !defined(ATFORK2MOD_PATH) || !defined(ATFORK3MOD_PATH) || !defined(ATFORK4MOD_PATH)
#error "the build passes the paths of the glibc test modules"
#endif

using namespace std::chrono_literals;
using forksafe::atfork_registry;
using forksafe_test::error_of;
using peers::hang_caught;
using peers::notes;
using peers::run_hanging_scenario;
using peers::run_scenario;

namespace {

// The arithmetic of tst-atfork1 and tst-atfork2: the registration order and
// the order of the calls decide the result.
int val = 0;

// The modules' handlers and the program's note here.
peers::text_log glog;
void note_to_log(const char* s) { glog.add(s); }

template <class T>
T symbol(void* lib, const char* name) {
  return reinterpret_cast<T>(::dlsym(lib, name));
}

bool still_loaded(const char* path) {
  void* again = ::dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  if (again == nullptr) return false;
  ::dlclose(again); // the reference NOLOAD just took
  return true;
}

// Keeps a second thread alive, as glibc's tst-atfork3 and tst-atfork4 do
// ("make the process act as multithreaded"), until destroyed.
class second_thread {
public:
  second_thread()
      : t_([this] {
          while (!stop_.load()) std::this_thread::sleep_for(1ms);
        }) {}
  ~second_thread() {
    stop_ = true;
    t_.join();
  }
  second_thread(const second_thread&) = delete; // owns a thread
  second_thread& operator=(const second_thread&) = delete;

private:
  std::atomic<bool> stop_{false};
  std::thread t_;
};

} // namespace

// ---- posix/tst-atfork1 ------------------------------------------------------

TEST_CASE("glibc tst-atfork1: prepare handlers run newest first, parent and child oldest first") {
  val = 0;
  auto first = atfork_registry::instance().add([] { val *= 2; }, [] { val += 4; }, [] { val += 8; });
  auto second = atfork_registry::instance().add([] { ++val; }, [] { val *= 4; }, [] { val *= 8; });
  // prepare: ++ then *2 = 2; parent: +4 then *4 = 24; child: +8 then *8 = 80.
  const auto child = forksafe_test::run_in_child([] { return val == 80 ? 0 : 1; });
  CHECK(child.exited_with(0));
  CHECK(val == 24);
}

TEST_CASE("glibc tst-atfork1: the same arithmetic through pthread_atfork gives the same values (same order as libc)") {
  const auto s = run_scenario([](const notes& out) {
    val = 0; // pthread_atfork cannot unregister: only inside this sandbox
    ::pthread_atfork([] { val *= 2; }, [] { val += 4; }, [] { val += 8; });
    ::pthread_atfork([] { ++val; }, [] { val *= 4; }, [] { val *= 8; });
    const auto child = forksafe_test::run_in_child([] { return val == 80 ? 0 : 1; });
    if (!child.exited_with(0) || val != 24) {
      out.add("libc: child %s (0: saw 80), parent saw %d (24)\n", child.describe().c_str(), val);
      return 1;
    }
    return 0;
  });
  CHECK_SCENARIO_OK(s);
}

// ---- posix/tst-atfork2 ------------------------------------------------------

TEST_CASE(
    "glibc tst-atfork2: a dlopen'ed plugin's handlers interleave with the program's; after dlclose they are gone") {
  const auto s = run_scenario([](const notes& out) {
    int failures = 0;
    val = 0;
    auto mine = atfork_registry::instance().add([] { val *= 2; }, [] { val += 4; }, [] { val += 8; });
    void* plugin = ::dlopen(ATFORK2MOD_PATH, RTLD_NOW | RTLD_LOCAL);
    if (plugin == nullptr) {
      out.add("dlopen: %s\n", ::dlerror());
      return 1;
    }
    symbol<void (*)(int*)>(plugin, "atfork2mod_bind")(&val);
    // The plugin registered last: prepare ++ then *2 = 2; parent +4, *4 = 24; child +8, *8 = 80.
    auto child = forksafe_test::run_in_child([&] {
      if (val == 80) return 0;
      out.add("1st fork: the child saw %d (80)\n", val);
      return 1;
    });
    if (!child.exited_with(0)) ++failures;
    if (val != 24) out.add("1st fork: the parent saw %d (24)\n", val), ++failures;

    if (::dlclose(plugin) != 0) out.add("dlclose: %s\n", ::dlerror()), ++failures;
    if (still_loaded(ATFORK2MOD_PATH)) out.add("the plugin is still loaded after dlclose\n"), ++failures;

    val = 1; // only the program's handlers: *2 = 2; parent +4 = 6; child +8 = 10
    child = forksafe_test::run_in_child([&] {
      if (val == 10) return 0;
      out.add("2nd fork: the child saw %d (10)\n", val);
      return 1;
    });
    if (!child.exited_with(0)) out.add("2nd fork: the child %s\n", child.describe().c_str()), ++failures;
    if (val != 6) out.add("2nd fork: the parent saw %d (6)\n", val), ++failures;
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

// Not in glibc, which has one handler list in libc: forksafe's registry is
// compiled into every library that includes it, and this program exports
// none of its symbols, yet the plugin must find the program's registry. The
// proof that matters is behaviour: a refusal in the plugin undoes what the
// program's handler prepared in the same pass (one retry loop), which two
// registries (two pthread_atfork triples) cannot do.
TEST_CASE("glibc tst-atfork2, one registry: a plugin of a program that exports nothing shares its registry and its "
          "retry loop") {
  const auto s = run_scenario([](const notes& out) {
    int failures = 0;
    void* plugin = ::dlopen(ATFORK2MOD_PATH, RTLD_NOW | RTLD_LOCAL);
    if (plugin == nullptr) {
      out.add("dlopen: %s\n", ::dlerror());
      return 1;
    }
    void* theirs = symbol<void* (*)()>(plugin, "atfork2mod_registry")();
    if (theirs != &atfork_registry::instance()) {
      out.add("the plugin's registry is at %p, the program's at %p\n", theirs,
              static_cast<void*>(&atfork_registry::instance()));
      ++failures;
    }
    glog.clear();
    symbol<void (*)(void (*)(const char*), int)>(plugin, "atfork2mod_add_refusing")(&note_to_log, 1);
    auto mine =
        atfork_registry::instance().add([] { glog.add("pX "); }, [] { glog.add("PX "); }, [] { glog.add("CX "); });
    // Prepare X (newest), then the plugin's R refuses: X is undone, the pass retried.
    const auto child = forksafe_test::run_in_child([&] {
      if (glog.str() == "pX R! PX pX R CR CX ") return 0;
      out.add("the child's log: %s(pX R! PX pX R CR CX )\n", glog.c_str());
      return 1;
    });
    if (!child.exited_with(0)) ++failures;
    if (glog.str() != "pX R! PX pX R PR PX ") {
      out.add("the parent's log: %s(pX R! PX pX R PR PX )\n", glog.c_str());
      ++failures;
    }

    if (::dlclose(plugin) != 0) out.add("dlclose: %s\n", ::dlerror()), ++failures;
    if (still_loaded(ATFORK2MOD_PATH)) out.add("the plugin is still loaded after dlclose\n"), ++failures;
    glog.clear();
    const auto after = forksafe_test::run_in_child([] { return glog.str() == "pX CX " ? 0 : 1; });
    if (!after.exited_with(0)) out.add("after dlclose the child %s\n", after.describe().c_str()), ++failures;
    if (glog.str() != "pX PX ") out.add("after dlclose the parent's log: %s(pX PX )\n", glog.c_str()), ++failures;
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

// ---- posix/tst-atfork3 ------------------------------------------------------

namespace {

// tst-atfork3's program side: one entry, older than the plugin's, whose
// handler for `dlclose_in` closes the plugin, between "[ " and "] ".
enum phase { in_prepare, in_parent, in_child };
phase dlclose_in = in_prepare;
void* atfork3_plugin = nullptr;

void close_atfork3_plugin() {
  glog.add("[ ");
  ::dlclose(atfork3_plugin);
  atfork3_plugin = nullptr;
  glog.add("] ");
}

struct atfork3_case {
  phase where;
  const char* parent_log;
  const char* child_log;
};

// The plugin's entry is newest, so its prepare runs first and its parent and
// child handlers last. Removed inside a handler after its prepare ran, it gets
// its parent (or child) call right there, inside the removal, and is
// destroyed there ("~M"), before dlclose unmaps its code; never afterwards.
constexpr atfork3_case atfork3_cases[] = {
    {in_prepare, "mp hp [ mP ~M ] hP ", "mp hp [ mP ~M ] hc "},
    {in_parent, "mp hp hP [ mP ~M ] ", "mp hp hc mc "},
    {in_child, "mp hp hP mP ", "mp hp hc [ mc ~M ] "},
};

} // namespace

TEST_CASE("glibc tst-atfork3: a handler may dlclose a plugin whose entry it already prepared; that entry is finished "
          "and gone inside the dlclose") {
  const auto s = run_scenario([](const notes& out) {
    int failures = 0;
    second_thread keep_alive;
    auto mine = atfork_registry::instance().add(
        [] {
          glog.add("hp ");
          if (dlclose_in == in_prepare) close_atfork3_plugin();
        },
        [] {
          glog.add("hP ");
          if (dlclose_in == in_parent) close_atfork3_plugin();
        },
        [] {
          glog.add("hc ");
          if (dlclose_in == in_child) close_atfork3_plugin();
        });
    for (const atfork3_case& c : atfork3_cases) {
      dlclose_in = c.where;
      glog.clear();
      atfork3_plugin = ::dlopen(ATFORK3MOD_PATH, RTLD_NOW);
      if (atfork3_plugin == nullptr) {
        out.add("dlopen: %s\n", ::dlerror());
        return 1;
      }
      symbol<void (*)(void (*)(const char*))>(atfork3_plugin, "atfork3mod_register")(&note_to_log);
      const auto child = forksafe_test::run_in_child([&] {
        int bad = 0;
        if (glog.str() != c.child_log)
          out.add("phase %d, the child's log: %s(%s)\n", c.where, glog.c_str(), c.child_log), ++bad;
        if (c.where == in_child && still_loaded(ATFORK3MOD_PATH))
          out.add("phase %d: still loaded in the child\n", c.where), ++bad;
        return bad;
      });
      if (!child.exited_with(0)) out.add("phase %d: the child %s\n", c.where, child.describe().c_str()), ++failures;
      if (glog.str() != c.parent_log)
        out.add("phase %d, the parent's log: %s(%s)\n", c.where, glog.c_str(), c.parent_log), ++failures;
      if (c.where != in_child && still_loaded(ATFORK3MOD_PATH))
        out.add("phase %d: still loaded\n", c.where), ++failures;
    }
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

TEST_CASE("glibc tst-atfork3, negative control: with one lock held across the handlers, a handler that removes an "
          "entry deadlocks") {
  const auto s = run_hanging_scenario(
      [](const notes&) {
        auto& r = peers::lock_held_registry::instance();
        const int plugin_entry = r.add([] {}, [] {}, [] {});
        r.add([plugin_entry] { peers::lock_held_registry::instance().remove(plugin_entry); }, nullptr, nullptr);
        return forksafe_test::run_in_child([] {}).exited_with(0) ? 0 : 1;
      },
      1500ms);
  INFO("sandbox ", s.outcome.describe());
  CHECK(hang_caught(s.outcome));
}

// ---- posix/tst-atfork4 ------------------------------------------------------

namespace {
void* atfork4_plugin = nullptr;
int runcount = 0;
int second_runcount = 0;
forksafe::atfork_handle second_handles[4]; // one registered by each prepare
int seconds = 0;
} // namespace

TEST_CASE("glibc tst-atfork4: a handler registers another (it joins from the next fork) and dlcloses a plugin before "
          "its prepare (never called)") {
  const auto s = run_scenario([](const notes& out) {
    int failures = 0;
    second_thread keep_alive;
    atfork4_plugin = ::dlopen(ATFORK4MOD_PATH, RTLD_LAZY);
    if (atfork4_plugin == nullptr) {
      out.add("dlopen: %s\n", ::dlerror());
      return 1;
    }
    symbol<void (*)()>(atfork4_plugin, "atfork4mod_register")(); // handlers that abort
    // Registered after the plugin's, so this prepare runs first.
    auto mine = atfork_registry::instance().add(
        [] {
          if (seconds < 4) {
            second_handles[seconds++] = atfork_registry::instance().add(
                [] { ++second_runcount; }, [] { ++second_runcount; }, [] { ++second_runcount; });
          }
          if (atfork4_plugin != nullptr) {
            ::dlclose(atfork4_plugin);
            atfork4_plugin = nullptr;
          }
          ++runcount;
        },
        [] { ++runcount; }, [] { ++runcount; });

    auto child = forksafe_test::run_in_child([&] {
      if (runcount == 2 && second_runcount == 0) return 0;
      out.add("1st fork, child: runcount %d (2), second %d (0)\n", runcount, second_runcount);
      return 1;
    });
    if (!child.exited_with(0)) ++failures;
    if (runcount != 2 || second_runcount != 0) {
      out.add("1st fork, parent: runcount %d (2), second %d (0)\n", runcount, second_runcount), ++failures;
    }
    if (still_loaded(ATFORK4MOD_PATH)) out.add("the plugin is still loaded\n"), ++failures;

    // The handler registered during the first fork takes part now.
    child = forksafe_test::run_in_child([&] {
      if (runcount == 4 && second_runcount == 2) return 0;
      out.add("2nd fork, child: runcount %d (4), second %d (2)\n", runcount, second_runcount);
      return 1;
    });
    if (!child.exited_with(0)) ++failures;
    if (runcount != 4 || second_runcount != 2) {
      out.add("2nd fork, parent: runcount %d (4), second %d (2)\n", runcount, second_runcount), ++failures;
    }
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

TEST_CASE("glibc tst-atfork4, negative control: with one lock held across the handlers, a handler that registers "
          "another deadlocks") {
  const auto s = run_hanging_scenario(
      [](const notes&) {
        peers::lock_held_registry::instance().add(
            [] { peers::lock_held_registry::instance().add(nullptr, nullptr, nullptr); }, nullptr, nullptr);
        return forksafe_test::run_in_child([] {}).exited_with(0) ? 0 : 1;
      },
      1500ms);
  INFO("sandbox ", s.outcome.describe());
  CHECK(hang_caught(s.outcome));
}

// ---- nptl/tst-fork1 .. tst-fork4 --------------------------------------------

// glibc's children sleep 100 ms * i before _exit(i); 10 ms * i here.
TEST_CASE("glibc tst-fork1: five threads fork at once; each child's exit code reaches its own thread") {
  std::atomic<int> prepares{0};
  auto counter = atfork_registry::instance().add([&] { prepares.fetch_add(1); }, nullptr, nullptr);
  constexpr int codes[] = {7, 6, 5, 4, 3};
  std::atomic<int> right{0};
  std::vector<std::thread> threads;
  for (int code : codes) {
    threads.emplace_back([code, &right] {
      auto r = forksafe::fork_call([code]() -> int {
        std::this_thread::sleep_for(std::chrono::milliseconds(10 * code));
        ::_exit(code);
      });
      const auto e = error_of(r);
      if (e && e->exited() && e->exit_code() == code) right.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  CHECK(right == 5);
  CHECK(prepares == 5);
}

TEST_CASE("glibc tst-fork2: in a child, getppid() is the parent, also from a thread the child starts") {
  const pid_t parent = ::getpid();
  auto r = forksafe::fork_call([parent] {
    if (::getppid() != parent) return 1;
    bool thread_sees_parent = false;
    std::thread t([&] { thread_sees_parent = ::getppid() == parent; });
    t.join();
    return thread_sees_parent ? 0 : 2;
  });
  CHECK(r.get() == 0);
}

TEST_CASE("glibc tst-fork3: a child forked from a second thread sees its parent and can start and join a thread") {
  const pid_t parent = ::getpid();
  int result = -1;
  std::thread forker([&] {
    auto r = forksafe::fork_call([parent] {
      if (::getppid() != parent) return 1;
      bool thread_sees_parent = false;
      std::thread t([&] { thread_sees_parent = ::getppid() == parent; });
      t.join();
      return thread_sees_parent ? 0 : 2;
    });
    result = r.get();
  });
  forker.join();
  CHECK(result == 0);
}

TEST_CASE("glibc tst-fork4: in the child, the forking thread's pthread_t still names it: pthread_kill(SIGTERM) ends "
          "the child") {
  // A fork_call child keeps the parent's handlers; doctest catches SIGTERM.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  const forksafe_test::scoped_signal term(SIGTERM, dfl);
  const pthread_t me = ::pthread_self();
  auto r = forksafe::fork_call([me] {
    const int err = ::pthread_kill(me, SIGTERM);
    return err == 0 ? 0 : 3; // reached only if the signal did not end the child
  });
  const auto e = error_of(r);
  REQUIRE(e.has_value());
  CHECK(e->signaled());
  CHECK(e->signal_name() == "SIGTERM");
}
