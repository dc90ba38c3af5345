// SPDX-License-Identifier: MIT
// folly's fork handler tests (folly/system/test/AtForkTest.cpp: AtForkListTest
// and AtForkTest), ported to forksafe::atfork_registry.
//
// folly's AtForkList tests call the list's prepare(), parent() and child()
// directly; here every case forks for real, so the parent's handlers are seen
// in the parent and the child's in a child that reports them through the
// notes pipe. folly keys a registration by a pointer; forksafe hands back an
// atfork_handle, so the key tests become handle tests (differences below).

#include <forksafe/atfork_registry.hpp>

#include "peer_support.hpp"

#include <atomic>  // the lock holder's handshake
#include <mutex>   // std::mutex: what folly's handlers try-lock
#include <string>  // expected logs
#include <thread>  // the lock holder
#include <utility> // std::move

using namespace std::chrono_literals;
using forksafe::atfork_handle;
using forksafe::atfork_registry;
using peers::hang_caught;
using peers::notes;
using peers::run_hanging_scenario;
using peers::run_scenario;

namespace {

// What the handlers of the entries under test did, in this process.
peers::op_log ops;

// Forks once; returns what the child saw (its copy of `ops`, with its own
// child handlers' entries), after checking it exited normally.
std::string fork_and_read_child_ops() {
  const auto s = run_scenario([](const notes& out) {
    out.add("%s", ops.str().c_str());
    return 0;
  });
  CHECK(s.outcome.exited_with(0));
  return s.notes;
}

// folly's list entry i: prepare 70+i (returning true), parent 80+i, child 90+i.
atfork_handle add_entry(int i) {
  return atfork_registry::instance().add(
      [i] {
        ops.push(70 + i);
        return true;
      },
      [i] { ops.push(80 + i); }, [i] { ops.push(90 + i); });
}

// folly's refusing entries: entry 1 refuses its first prepare, once.
atfork_handle add_refusing_entry(int i) {
  return atfork_registry::instance().add(
      [i, q = 0]() mutable {
        ops.push(70 + i);
        return q++ > 0 || i != 1;
      },
      [i] { ops.push(80 + i); }, [i] { ops.push(90 + i); });
}

} // namespace

// ---- AtForkListTest ---------------------------------------------------------

TEST_CASE("folly AtForkListTest append_nullptr: an entry with no handlers is registered, counted and runs nothing") {
  ops.clear();
  const auto before = atfork_registry::instance().size();
  {
    auto h = atfork_registry::instance().add(nullptr, nullptr, nullptr);
    CHECK(h);
    CHECK(atfork_registry::instance().size() == before + 1);
    CHECK(fork_and_read_child_ops().empty());
  }
  CHECK(atfork_registry::instance().size() == before);
}

TEST_CASE("folly AtForkListTest remove_nullptr: resetting an empty handle is harmless") {
  const auto before = atfork_registry::instance().size();
  atfork_handle nothing;
  CHECK_FALSE(nothing);
  nothing.reset();
  CHECK_FALSE(nothing);
  CHECK(atfork_registry::instance().size() == before);
  CHECK(fork_and_read_child_ops().empty());
}

TEST_CASE(
    "folly AtForkListTest append_key and remove_key: a handle is registered until reset, then its handlers stop") {
  ops.clear();
  const auto before = atfork_registry::instance().size();
  auto h = add_entry(0);
  CHECK(h);
  CHECK(atfork_registry::instance().size() == before + 1);
  h.reset();
  CHECK_FALSE(h);
  CHECK(atfork_registry::instance().size() == before);
  CHECK(fork_and_read_child_ops().empty());
  CHECK(ops.str().empty());
}

// folly throws std::invalid_argument when a key is registered twice; forksafe
// has no keys: every add() is a registration of its own, even of the same
// callable, and each runs.
TEST_CASE("folly AtForkListTest append_key_duplicate: the same handlers added twice are two registrations, both run") {
  ops.clear();
  const auto prepare = [] { ops.push(70); };
  auto first = atfork_registry::instance().add(prepare, nullptr, nullptr);
  auto second = atfork_registry::instance().add(prepare, nullptr, nullptr);
  CHECK(fork_and_read_child_ops() == "70 70 ");
  CHECK(ops.str() == "70 70 ");
}

// folly throws std::out_of_range when removing a key it does not hold;
// forksafe's reset() is noexcept and idempotent.
TEST_CASE("folly AtForkListTest remove_key_missing: a second reset of a handle does nothing and cannot throw") {
  ops.clear();
  auto h = add_entry(0);
  static_assert(noexcept(h.reset()));
  h.reset();
  const auto after_first = atfork_registry::instance().size();
  h.reset();
  CHECK(atfork_registry::instance().size() == after_first);
  CHECK(fork_and_read_child_ops().empty());
}

TEST_CASE("folly AtForkListTest prepare_parent: prepare, then parent, in the parent") {
  ops.clear();
  auto h = add_entry(0);
  (void)fork_and_read_child_ops();
  CHECK(ops.str() == "70 80 ");
}

TEST_CASE("folly AtForkListTest prepare_parent_prepare_empty: without a prepare, only the parent handler runs") {
  ops.clear();
  auto h = atfork_registry::instance().add(
      nullptr, [] { ops.push(80); }, [] { ops.push(90); });
  (void)fork_and_read_child_ops();
  CHECK(ops.str() == "80 ");
}

TEST_CASE("folly AtForkListTest prepare_parent_parent_empty: without a parent handler, only the prepare runs") {
  ops.clear();
  auto h = atfork_registry::instance().add(
      [] {
        ops.push(70);
        return true;
      },
      nullptr, [] { ops.push(90); });
  (void)fork_and_read_child_ops();
  CHECK(ops.str() == "70 ");
}

TEST_CASE("folly AtForkListTest prepare_parent_multi: prepares newest first, parents oldest first") {
  ops.clear();
  auto h0 = add_entry(0);
  auto h1 = add_entry(1);
  auto h2 = add_entry(2);
  (void)fork_and_read_child_ops();
  CHECK(ops.str() == "72 71 70 80 81 82 ");
}

// The undo after a refusal calls the parent handlers of the entries already
// prepared in that pass, newest registration first (83 before 82), then the
// pass is retried from the newest entry.
TEST_CASE(
    "folly AtForkListTest prepare_parent_return_false: a refusal undoes the prepared newest first, then retries") {
  ops.clear();
  auto h0 = add_refusing_entry(0);
  auto h1 = add_refusing_entry(1);
  auto h2 = add_refusing_entry(2);
  auto h3 = add_refusing_entry(3);
  (void)fork_and_read_child_ops();
  CHECK(ops.str() == "73 72 71 83 82 73 72 71 70 80 81 82 83 ");
}

TEST_CASE("folly AtForkListTest prepare_child: prepare, then child, in the child") {
  ops.clear();
  auto h = add_entry(0);
  CHECK(fork_and_read_child_ops() == "70 90 ");
}

TEST_CASE("folly AtForkListTest prepare_child_multi: prepares newest first, children oldest first") {
  ops.clear();
  auto h0 = add_entry(0);
  auto h1 = add_entry(1);
  auto h2 = add_entry(2);
  CHECK(fork_and_read_child_ops() == "72 71 70 90 91 92 ");
}

// The child inherits the parent's log of the refused pass and its undo.
TEST_CASE(
    "folly AtForkListTest prepare_child_return_false: the child sees the undone pass, the retry, then its handlers") {
  ops.clear();
  auto h0 = add_refusing_entry(0);
  auto h1 = add_refusing_entry(1);
  auto h2 = add_refusing_entry(2);
  auto h3 = add_refusing_entry(3);
  CHECK(fork_and_read_child_ops() == "73 72 71 83 82 73 72 71 70 90 91 92 93 ");
}

TEST_CASE("folly AtForkListTest prepare_child_parent_empty: without a parent handler the child still runs its own") {
  ops.clear();
  auto h = atfork_registry::instance().add(
      [] {
        ops.push(70);
        return true;
      },
      nullptr, [] { ops.push(90); });
  CHECK(fork_and_read_child_ops() == "70 90 ");
}

TEST_CASE("folly AtForkListTest prepare_child_child_empty: without a child handler the child sees only the prepare") {
  ops.clear();
  auto h = atfork_registry::instance().add(
      [] {
        ops.push(70);
        return true;
      },
      [] { ops.push(80); }, nullptr);
  CHECK(fork_and_read_child_ops() == "70 ");
}

// ---- AtForkTest ---------------------------------------------------------------

TEST_CASE("folly AtForkTest prepare: a registered prepare runs on fork, and no longer once unregistered") {
  bool forked = false;
  auto h = atfork_registry::instance().add(
      [&] {
        forked = true;
        return true;
      },
      [] {}, [] {});
  CHECK(forksafe_test::run_in_child([] {}).exited_with(0));
  CHECK(forked);
  forked = false;
  h.reset();
  CHECK(forksafe_test::run_in_child([] {}).exited_with(0));
  CHECK_FALSE(forked);
}

namespace {

// folly's ordering scenario, made deterministic: handlers for A then B (so
// prepare takes B first), and a thread that holds A and asks for B only once
// B's prepare has taken B. With try-lock handlers the fork backs out, the
// thread finishes, and the fork goes through; with blocking handlers it is
// the textbook lock-order deadlock. Returns the sandbox's exit code: 0 when
// the fork completed and both locks were free in the child.
template <class Take>
int ordering_scenario(Take take, const notes& out) {
  std::mutex a, b;
  std::atomic<bool> a_held{false}, b_taken{false};
  auto ha = atfork_registry::instance().add([&] { return take(a); }, [&] { a.unlock(); }, [&] { a.unlock(); });
  auto hb = atfork_registry::instance().add(
      [&] {
        const bool ok = take(b);
        if (ok) b_taken = true;
        return ok;
      },
      [&] { b.unlock(); }, [&] { b.unlock(); });
  std::thread holder([&] {
    std::lock_guard ga(a);
    a_held = true;
    while (!b_taken) std::this_thread::yield();
    std::lock_guard gb(b); // holds A, wants B
  });
  while (!a_held) std::this_thread::yield();
  const auto child = forksafe_test::run_in_child([&] {
    const bool free = a.try_lock() && b.try_lock();
    return free ? 0 : 1;
  });
  holder.join();
  if (!child.exited_with(0)) {
    out.add("the forked child %s (0: both locks free there)\n", child.describe().c_str());
    return 1;
  }
  return 0;
}

} // namespace

TEST_CASE("folly AtForkTest ordering: try-lock handlers against a thread holding A and wanting B: the fork backs out "
          "and completes") {
  const auto s = run_scenario(
      [](const notes& out) { return ordering_scenario([](std::mutex& m) { return m.try_lock(); }, out); }, 20s);
  CHECK_SCENARIO_OK(s);
}

TEST_CASE("folly AtForkTest ordering, negative control: blocking handlers in the same choreography deadlock the fork") {
  const auto s = run_hanging_scenario(
      [](const notes& out) {
        return ordering_scenario(
            [](std::mutex& m) {
              m.lock();
              return true;
            },
            out);
      },
      1500ms);
  INFO("sandbox ", s.outcome.describe(), "; it noted: ", s.notes);
  CHECK(hang_caught(s.outcome));
}
