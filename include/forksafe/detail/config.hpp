// SPDX-License-Identifier: MIT
//
// forksafe/detail/config.hpp: the language check, the version macros, the
// ABI version and its inline namespace, shared by every forksafe header. Not
// for direct use.

#ifndef FORKSAFE_DETAIL_CONFIG_HPP
#define FORKSAFE_DETAIL_CONFIG_HPP

#if !defined(__cplusplus) || (__cplusplus < 202002L)
#error "forksafe requires C++20 or later: compile with -std=c++20 (or /std:c++20)."
#endif

#if !defined(__unix__) && !defined(__APPLE__)
#error "forksafe requires a POSIX system with fork()."
#endif

// The version, as meson.build's project version says (tools/check_version.py
// checks that they agree).
#define FORKSAFE_VERSION_MAJOR 0
#define FORKSAFE_VERSION_MINOR 2
#define FORKSAFE_VERSION_PATCH 0
#define FORKSAFE_VERSION (FORKSAFE_VERSION_MAJOR * 10000 + FORKSAFE_VERSION_MINOR * 100 + FORKSAFE_VERSION_PATCH)

// The ABI version: every public name lives in the inline namespace
// forksafe::abi_vN (so two versions of forksafe in one process, say in two
// plugins, never merge each other's code), and it is the layout version of
// the process hub (detail/process_hub.hpp), the state every copy of forksafe
// in a process shares. Copies of one ABI share one hub, one fork registry;
// a copy that meets only hubs of other ABIs keeps its own and says so once
// on stderr. Bumped whenever the hub's layout or meaning changes. Defining
// it is for forksafe's own test of two versions meeting.
#ifndef FORKSAFE_ABI_VERSION
#define FORKSAFE_ABI_VERSION 1
#endif
#define FORKSAFE_PP_CAT_(a, b) a##b
#define FORKSAFE_PP_CAT(a, b) FORKSAFE_PP_CAT_(a, b)
#define FORKSAFE_PP_STR_(a) #a
#define FORKSAFE_PP_STR(a) FORKSAFE_PP_STR_(a)
#define FORKSAFE_ABI_NAMESPACE FORKSAFE_PP_CAT(abi_v, FORKSAFE_ABI_VERSION)

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
