// SPDX-License-Identifier: MIT
//
// forksafe/detail/config.hpp: the language check, version macros and the
// versioned namespace shared by every forksafe header. Not for direct use.

#ifndef FORKSAFE_DETAIL_CONFIG_HPP
#define FORKSAFE_DETAIL_CONFIG_HPP

#if !defined(__cplusplus) || (__cplusplus < 202002L)
#error "forksafe requires C++20 or later: compile with -std=c++20 (or /std:c++20)."
#endif

#if !defined(__unix__) && !defined(__APPLE__)
#error "forksafe requires a POSIX system with fork()."
#endif

#define FORKSAFE_VERSION_MAJOR 0
#define FORKSAFE_VERSION_MINOR 1
#define FORKSAFE_VERSION_PATCH 0
#define FORKSAFE_VERSION \
  (FORKSAFE_VERSION_MAJOR * 10000 + FORKSAFE_VERSION_MINOR * 100 + FORKSAFE_VERSION_PATCH)

// Entities that must exist once per process (the registry, the fork
// generation, the thread ids) keep default visibility even when a library is
// built with -fvisibility=hidden, so the dynamic linker merges the copies that
// every shared library compiled from these headers carries. See the README,
// "One registry per process".
#if defined(__GNUC__) || defined(__clang__)
#define FORKSAFE_PROCESS_UNIQUE __attribute__((visibility("default")))
#else
#define FORKSAFE_PROCESS_UNIQUE
#endif

// State each shared object keeps for itself (its slot for the process hub,
// caches): hidden, so it is never merged across objects nor made
// STB_GNU_UNIQUE (which would keep the object from being unloaded).
#if defined(__GNUC__) || defined(__clang__)
#define FORKSAFE_HIDDEN __attribute__((visibility("hidden")))
#else
#define FORKSAFE_HIDDEN
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FORKSAFE_LIKELY(x) __builtin_expect(!!(x), 1)
#define FORKSAFE_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define FORKSAFE_NOINLINE __attribute__((noinline))
#else
#define FORKSAFE_LIKELY(x) (x)
#define FORKSAFE_UNLIKELY(x) (x)
#define FORKSAFE_NOINLINE
#endif

#endif // FORKSAFE_DETAIL_CONFIG_HPP
