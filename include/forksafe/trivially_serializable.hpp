// SPDX-License-Identifier: MIT
//
// forksafe/trivially_serializable.hpp: what may cross a process boundary by
// value: the concept fork_call and process_pool check at compile time.
//
// Defines:
//   enable_trivially_serializable<T>  customisation point: opt a type in or out
//   trivially_serializable<T>         concept: a type whose bytes are its value
//
// A callable that returns a std::future or a lock makes fork_call and
// process_pool::submit ill-formed, with a diagnostic naming
// trivially_serializable, where Python's ProcessPoolExecutor fails at run
// time ("can't pickle _thread.RLock objects").

#ifndef FORKSAFE_TRIVIALLY_SERIALIZABLE_HPP
#define FORKSAFE_TRIVIALLY_SERIALIZABLE_HPP

#include "detail/config.hpp"

#include <array>       // std::array: serialisable when its element is
#include <cstddef>     // std::size_t
#include <functional>  // std::reference_wrapper is rejected
#include <optional>    // std::optional is recognised
#include <span>        // std::span is rejected
#include <string_view> // std::basic_string_view is rejected
#include <tuple>       // std::tuple is recognised
#include <type_traits> // the rules
#include <utility>     // std::pair is recognised
#include <variant>     // std::variant is recognised

#include <pthread.h>   // pthread_mutex_t, pthread_cond_t, pthread_rwlock_t are opted out
#include <semaphore.h> // sem_t is opted out

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE {

namespace detail {
template <class T>
struct serializable_by_default;
} // namespace detail

/// Customisation point, in the spirit of std::ranges::enable_borrowed_range:
/// whether the bytes of a T are its value, so a T built in a child means the
/// same in its parent. Specialise it for a cv-unqualified type of yours:
///
///     template <> inline constexpr bool forksafe::enable_trivially_serializable<my_handle> = false;
///
/// Opt out a type the default accepts but whose bytes are not its value: a
/// struct holding a pointer, a file descriptor, a thread id, a lock. Opt in a
/// type the default rejects although its bytes are its value (a struct with a
/// std::pair member is not trivially copyable under libstdc++); opting in is
/// a promise, and the type must still be copy-constructible and trivially
/// destructible (trivially_serializable checks both).
///
/// The default (detail::serializable_by_default): trivially copyable, really
/// copy-constructible (GCC and Clang call std::mutex and std::atomic<int>
/// trivially copyable although their copies are deleted), trivially
/// destructible, and neither a pointer, a member pointer, a C array,
/// std::basic_string_view, std::span nor std::reference_wrapper. std::pair,
/// std::tuple, std::array, std::optional and std::variant are accepted when
/// every member is trivially_serializable (recursively, so a user's opt-out
/// reaches into them). A pointer inside a user's struct cannot be seen:
/// opt such a struct out. forksafe opts out pthread_mutex_t, pthread_cond_t,
/// pthread_rwlock_t and sem_t.
template <class T>
inline constexpr bool enable_trivially_serializable = detail::serializable_by_default<T>::value;

/// A type whose bytes are its value: what fork_call may return from a child.
/// enable_trivially_serializable<remove_cv_t<T>> decides, and T must in any
/// case be an object type (not a reference, a function or void), copy-
/// constructible and trivially destructible. Checked at compile time only.
template <class T>
concept trivially_serializable = std::is_object_v<T> && enable_trivially_serializable<std::remove_cv_t<T>> &&
    std::is_copy_constructible_v<T> && std::is_trivially_destructible_v<T>;

template <>
inline constexpr bool enable_trivially_serializable<pthread_mutex_t> = false;
template <>
inline constexpr bool enable_trivially_serializable<pthread_cond_t> = false;
template <>
inline constexpr bool enable_trivially_serializable<pthread_rwlock_t> = false;
template <>
inline constexpr bool enable_trivially_serializable<sem_t> = false;

namespace detail {

template <class T>
struct serializable_by_default
    : std::bool_constant<std::is_trivially_copyable_v<T> && std::is_copy_constructible_v<T> &&
                         std::is_trivially_destructible_v<T> && !std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
                         !std::is_array_v<T>> {};

// Views: trivially copyable, but their bytes are an address in the child.
template <class C, class Traits>
struct serializable_by_default<std::basic_string_view<C, Traits>> : std::false_type {};
template <class E, std::size_t N>
struct serializable_by_default<std::span<E, N>> : std::false_type {};
template <class U>
struct serializable_by_default<std::reference_wrapper<U>> : std::false_type {};

// Products and sums: their bytes are their members' bytes plus a
// discriminator, although libstdc++ makes pair and tuple not trivially
// copyable (their assignment operators are user-provided).
template <class A, class B>
struct serializable_by_default<std::pair<A, B>>
    : std::bool_constant<trivially_serializable<A> && trivially_serializable<B>> {};
template <class... Ts>
struct serializable_by_default<std::tuple<Ts...>> : std::bool_constant<(trivially_serializable<Ts> && ...)> {};
template <class U, std::size_t N>
struct serializable_by_default<std::array<U, N>> : std::bool_constant<trivially_serializable<U>> {};
template <class U>
struct serializable_by_default<std::optional<U>> : std::bool_constant<trivially_serializable<U>> {};
template <class... Ts>
struct serializable_by_default<std::variant<Ts...>> : std::bool_constant<(trivially_serializable<Ts> && ...)> {};

// What fork_call transports for a call returning R: void travels as an empty
// frame, so the constraint can name trivially_serializable directly and the
// compiler's diagnostic says which type failed it.
struct void_result {};
template <class R>
using transported_t = std::conditional_t<std::is_void_v<R>, void_result, std::remove_cv_t<R>>;

template <class F, class... Args>
using call_result_t = std::remove_cv_t<std::invoke_result_t<F, Args...>>;

} // namespace detail

} // namespace forksafe

#endif // FORKSAFE_TRIVIALLY_SERIALIZABLE_HPP
