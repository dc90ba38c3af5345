// SPDX-License-Identifier: MIT
//
// forksafe/detail/signal_names.hpp: the conventional name of a signal
// number, for reports ("killed by SIGSEGV").

#ifndef FORKSAFE_DETAIL_SIGNAL_NAMES_HPP
#define FORKSAFE_DETAIL_SIGNAL_NAMES_HPP

#include "config.hpp"

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
  static constexpr entry names[] = {
    {SIGHUP, "SIGHUP"},
    {SIGINT, "SIGINT"},
    {SIGQUIT, "SIGQUIT"},
    {SIGILL, "SIGILL"},
    {SIGTRAP, "SIGTRAP"},
    {SIGABRT, "SIGABRT"},
    {SIGBUS, "SIGBUS"},
    {SIGFPE, "SIGFPE"},
    {SIGKILL, "SIGKILL"},
    {SIGUSR1, "SIGUSR1"},
    {SIGSEGV, "SIGSEGV"},
    {SIGUSR2, "SIGUSR2"},
    {SIGPIPE, "SIGPIPE"},
    {SIGALRM, "SIGALRM"},
    {SIGTERM, "SIGTERM"},
    {SIGCHLD, "SIGCHLD"},
    {SIGCONT, "SIGCONT"},
    {SIGSTOP, "SIGSTOP"},
    {SIGTSTP, "SIGTSTP"},
    {SIGTTIN, "SIGTTIN"},
    {SIGTTOU, "SIGTTOU"},
    {SIGURG, "SIGURG"},
    {SIGXCPU, "SIGXCPU"},
    {SIGXFSZ, "SIGXFSZ"},
    {SIGVTALRM, "SIGVTALRM"},
    {SIGPROF, "SIGPROF"},
    {SIGSYS, "SIGSYS"},
    {SIGWINCH, "SIGWINCH"},
#if defined(SIGSTKFLT)
    {SIGSTKFLT, "SIGSTKFLT"},
#endif
#if defined(SIGPOLL)
    {SIGPOLL, "SIGPOLL"}, // SIGIO on Linux
#elif defined(SIGIO)
    {SIGIO, "SIGIO"},
#endif
#if defined(SIGPWR)
    {SIGPWR, "SIGPWR"},
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
