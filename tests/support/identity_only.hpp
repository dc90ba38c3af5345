// SPDX-License-Identifier: MIT
//
// tests/support/identity_only.hpp: a compile-time check for the types whose
// object is their identity (mutexes, condition variables): neither copied
// nor moved, as the standard's own.

#ifndef FORKSAFE_TESTS_SUPPORT_IDENTITY_ONLY_HPP
#define FORKSAFE_TESTS_SUPPORT_IDENTITY_ONLY_HPP

#include <type_traits> // std::is_copy_constructible_v and the rest

namespace forksafe_test {

/// No copy or move, construction or assignment.
template <class T>
constexpr bool identity_only = !std::is_copy_constructible_v<T> && !std::is_move_constructible_v<T> &&
                               !std::is_copy_assignable_v<T> && !std::is_move_assignable_v<T>;

} // namespace forksafe_test

#endif // FORKSAFE_TESTS_SUPPORT_IDENTITY_ONLY_HPP
