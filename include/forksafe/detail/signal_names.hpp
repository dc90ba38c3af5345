// SPDX-License-Identifier: MIT
//
// forksafe/detail/signal_names.hpp: the conventional name of a signal
// number, for reports ("killed by SIGSEGV").

#ifndef FORKSAFE_DETAIL_SIGNAL_NAMES_HPP
#define FORKSAFE_DETAIL_SIGNAL_NAMES_HPP

#include "config.hpp"

#include <array>   // the table
#include <csignal> // the signal numbers
#include <string>  // the name

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// The conventional name of a signal ("SIGSEGV"; a real-time one is
/// "SIGRTMIN+N"), or "signal N" for a number that is no signal.
inline std::string signal_name(int sig) {
  struct entry {
    int number;
    const char* name;
  };
  static constexpr std::array names = {
    entry{SIGHUP, "SIGHUP"},
    entry{SIGINT, "SIGINT"},
    entry{SIGQUIT, "SIGQUIT"},
    entry{SIGILL, "SIGILL"},
    entry{SIGTRAP, "SIGTRAP"},
    entry{SIGABRT, "SIGABRT"},
    entry{SIGBUS, "SIGBUS"},
    entry{SIGFPE, "SIGFPE"},
    entry{SIGKILL, "SIGKILL"},
    entry{SIGUSR1, "SIGUSR1"},
    entry{SIGSEGV, "SIGSEGV"},
    entry{SIGUSR2, "SIGUSR2"},
    entry{SIGPIPE, "SIGPIPE"},
    entry{SIGALRM, "SIGALRM"},
    entry{SIGTERM, "SIGTERM"},
    entry{SIGCHLD, "SIGCHLD"},
    entry{SIGCONT, "SIGCONT"},
    entry{SIGSTOP, "SIGSTOP"},
    entry{SIGTSTP, "SIGTSTP"},
    entry{SIGTTIN, "SIGTTIN"},
    entry{SIGTTOU, "SIGTTOU"},
    entry{SIGURG, "SIGURG"},
    entry{SIGXCPU, "SIGXCPU"},
    entry{SIGXFSZ, "SIGXFSZ"},
    entry{SIGVTALRM, "SIGVTALRM"},
    entry{SIGPROF, "SIGPROF"},
    entry{SIGSYS, "SIGSYS"},
    entry{SIGWINCH, "SIGWINCH"},
#if defined(SIGSTKFLT)
    entry{SIGSTKFLT, "SIGSTKFLT"},
#endif
#if defined(SIGPOLL)
    entry{SIGPOLL, "SIGPOLL"}, // SIGIO on Linux
#elif defined(SIGIO)
    entry{SIGIO, "SIGIO"},
#endif
#if defined(SIGPWR)
    entry{SIGPWR, "SIGPWR"},
#endif
  };
  for (const entry& e : names) {
    if (e.number == sig) return e.name;
  }
#if defined(SIGRTMIN) && defined(SIGRTMAX)
  // Real-time signals have no names of their own; glibc reserves the first
  // few, so SIGRTMIN is a run-time value.
  if (sig == SIGRTMIN) return "SIGRTMIN";
  if (sig > SIGRTMIN && sig <= SIGRTMAX) return "SIGRTMIN+" + std::to_string(sig - SIGRTMIN);
#endif
  return "signal " + std::to_string(sig);
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_SIGNAL_NAMES_HPP
