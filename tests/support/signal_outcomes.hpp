// SPDX-License-Identifier: MIT
//
// tests/support/signal_outcomes.hpp: what each signal sent to a child must
// do to it, for the tests that send every signal to a fork_call child and
// to a pool worker mid-task.
//
//   every_signal()         1..31 and SIGRTMIN..SIGRTMAX
//   default_action_of()    terminate, ignore or stop (POSIX, signal(7))
//   expected_name()        the name child_error::signal_name() must give
//   default_dispositions   every signal at SIG_DFL for a test's length
//   check_outcome()        "" when a child sent a signal ended as it must

#ifndef FORKSAFE_TESTS_SUPPORT_SIGNAL_OUTCOMES_HPP
#define FORKSAFE_TESTS_SUPPORT_SIGNAL_OUTCOMES_HPP

#include <forksafe/process_result.hpp> // child_error

#include <csignal> // signals, sigaction
#include <cstring> // sigabbrev_np: glibc's own signal names, the oracle
#include <string>  // names, failure lines
#include <utility> // std::pair
#include <vector>  // signals, saved dispositions

namespace forksafe_test {

enum class default_action { terminate, ignore, stop };

/// What POSIX and signal(7) say a signal does to a process that has not
/// caught, ignored or blocked it.
inline default_action default_action_of(int sig) {
  switch (sig) {
  case SIGCHLD:
  case SIGURG:
  case SIGWINCH:
  case SIGCONT: return default_action::ignore;
  case SIGSTOP:
  case SIGTSTP:
  case SIGTTIN:
  case SIGTTOU: return default_action::stop;
  default: return default_action::terminate;
  }
}

/// Every signal a process can be sent: 1..31 and the real-time ones glibc
/// leaves to applications (32 and 33 are its own).
inline std::vector<int> every_signal() {
  std::vector<int> all;
  for (int sig = 1; sig < 32; ++sig) all.push_back(sig);
  for (int sig = SIGRTMIN; sig <= SIGRTMAX; ++sig) all.push_back(sig);
  return all;
}

/// The name child_error::signal_name() must give, from glibc's own table
/// (sigabbrev_np), not from forksafe's.
inline std::string expected_name(int sig) {
  if (sig >= SIGRTMIN) return sig == SIGRTMIN ? "SIGRTMIN" : "SIGRTMIN+" + std::to_string(sig - SIGRTMIN);
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

/// Every signal at SIG_DFL for the test's length (doctest catches SIGTERM,
/// SIGINT and the crash signals): children then show the default actions.
struct default_dispositions {
  std::vector<std::pair<int, struct sigaction>> saved;
  default_dispositions() {
    for (int sig : every_signal()) {
      if (sig == SIGKILL || sig == SIGSTOP) continue;
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      sigemptyset(&dfl.sa_mask);
      struct sigaction old {};
      if (::sigaction(sig, &dfl, &old) == 0) saved.emplace_back(sig, old);
    }
  }
  ~default_dispositions() {
    for (auto& [sig, old] : saved) ::sigaction(sig, &old, nullptr);
  }
  default_dispositions(const default_dispositions&) = delete; // one restore
  default_dispositions& operator=(const default_dispositions&) = delete;
};

/// What happened to one child that was sent one signal, as a line for the
/// failure message; empty when it matched the default action. `get` returns
/// the child's value (7 when it was let through).
/// `orphaned`: the child is in an orphaned process group (no member has a
/// parent in another group of the session; so are the test's own workers when
/// the test runs in a session of its own, as under meson), where the kernel
/// discards SIGTSTP, SIGTTIN and SIGTTOU: then those may be ignored too.
template <class Get>
std::string check_outcome(int sig, Get&& get, bool orphaned = false) {
  const std::string name = expected_name(sig);
  const bool may_be_discarded = orphaned && sig != SIGSTOP && default_action_of(sig) == default_action::stop;
  try {
    const int v = get();
    if ((default_action_of(sig) == default_action::ignore || may_be_discarded) && v == 7) return "";
    return name + ": returned " + std::to_string(v);
  } catch (const forksafe::child_error& e) {
    switch (default_action_of(sig)) {
    case default_action::terminate:
      if (e.signaled() && e.signal_number() == sig && e.signal_name() == name &&
          std::string(e.what()).find(name) != std::string::npos) {
        return "";
      }
      break;
    case default_action::stop:
      if (e.timed_out() && e.signal_number() == SIGKILL) return ""; // stopped, then killed at its timeout
      break;
    case default_action::ignore: break;
    }
    return name + ": " + e.what();
  }
}

} // namespace forksafe_test

#endif // FORKSAFE_TESTS_SUPPORT_SIGNAL_OUTCOMES_HPP
