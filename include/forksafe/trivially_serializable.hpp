// SPDX-License-Identifier: MIT
//
// forksafe/trivially_serializable.hpp: what may cross a process boundary by
// value, with no serialisation code written by the user: the concept
// fork_call, process_result and process_pool check at compile time.
//
// Defines:
//   enable_trivially_serializable<T>  customisation point: opt a type in or out
//   trivially_serializable<T>         concept: a type that crosses by value
//
// Crosses: types whose bytes are their value (numbers, enums, plain
// structs), std::string, std::vector, the ordered and unordered maps and
// sets, and these nested in each other and in std::pair, std::tuple,
// std::optional, std::variant and std::array; and a struct of yours that
// lists its members in one line:
//
//     struct row {
//       int id;
//       std::vector<std::string> tags;
//       auto forksafe_members() { return std::tie(id, tags); }
//     };
//
// Rejected, at compile time: pointers, references, views (std::string_view,
// std::span), futures and promises, locks, atomics, threads, anything that
// holds one of those (std::vector<std::future<int>>), and structs that hold
// a std::string or a vector without listing their members. Where Python's
// ProcessPoolExecutor fails at run time ("can't pickle _thread.RLock
// objects"), fork_call and process_pool::submit do not compile, and the
// first error line names the function, the type and the remedy.

#ifndef FORKSAFE_TRIVIALLY_SERIALIZABLE_HPP
#define FORKSAFE_TRIVIALLY_SERIALIZABLE_HPP

#include "detail/config.hpp"

#include <array>         // std::array
#include <concepts>      // std::default_initializable
#include <cstddef>       // std::size_t
#include <functional>    // std::reference_wrapper is rejected; std::less, std::hash
#include <map>           // std::map, std::multimap
#include <optional>      // std::optional
#include <set>           // std::set, std::multiset
#include <span>          // std::span is rejected
#include <string>        // std::basic_string
#include <string_view>   // std::basic_string_view is rejected
#include <tuple>         // std::tuple
#include <type_traits>   // the rules
#include <unordered_map> // std::unordered_map, std::unordered_multimap
#include <unordered_set> // std::unordered_set, std::unordered_multiset
#include <utility>       // std::pair
#include <variant>       // std::variant
#include <vector>        // std::vector

#include <pthread.h>   // pthread_mutex_t, pthread_cond_t, pthread_rwlock_t are opted out
#include <semaphore.h> // sem_t is opted out

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE {

namespace detail {
template <class T>
struct serializable_by_default;
} // namespace detail

/// Customisation point, in the spirit of std::ranges::enable_borrowed_range:
/// whether a T built in a child means the same in its parent once it has
/// crossed. Specialise it for a cv-unqualified type of yours:
///
///     template <> inline constexpr bool forksafe::enable_trivially_serializable<my_handle> = false;
///
/// Opt out a type the default accepts but whose bytes are not its value: a
/// struct holding a pointer, a file descriptor, a thread id, a lock. Opt in a
/// type the default rejects although its bytes are its value; opting in is
/// a promise, and such a type must still be copy-constructible and
/// trivially destructible (trivially_serializable checks both). A struct
/// whose members are not all bytes (a std::string, a vector) opts in with a
/// forksafe_members() member instead (see trivially_serializable).
///
/// The default (detail::serializable_by_default) accepts:
///  - a trivially copyable type that really is copy-constructible (GCC and
///    Clang call std::mutex and std::atomic<int> trivially copyable although
///    their copies are deleted) and trivially destructible, and is neither a
///    pointer, a member pointer, a C array, std::basic_string_view, std::span
///    nor std::reference_wrapper. A pointer inside such a struct cannot be
///    seen: opt that struct out;
///  - std::basic_string<C> for a character type C, with the standard
///    traits and allocator;
///  - std::vector<T> (std::vector<bool> too), std::array<T, N>,
///    std::optional<T>, std::pair, std::tuple and std::variant when each of
///    their element types is trivially_serializable;
///  - std::map, std::multimap, std::set, std::multiset and their unordered
///    forms, with the standard allocator and a comparator, hash and equality
///    that hold no state (std::less<>, std::hash<K>, ...), when the key and
///    mapped types are trivially_serializable;
///  - a class with its own forksafe_members() (see trivially_serializable).
///
/// forksafe opts out pthread_mutex_t, pthread_cond_t, pthread_rwlock_t and sem_t.
template <class T>
inline constexpr bool enable_trivially_serializable = detail::serializable_by_default<T>::value;

namespace detail {

/// A class that lists its members: `auto forksafe_members() { return
/// std::tie(a, b); }`, declared in the class itself (one inherited from a
/// base would leave the derived class's own members behind), returning
/// non-const lvalue references.
template <class T>
concept lists_members = std::is_class_v<T> && requires(T& t) {
  t.forksafe_members();
};

template <class Tuple>
struct member_refs : std::false_type {};
template <class... Ms>
struct member_refs<std::tuple<Ms&...>> : std::bool_constant<(!std::is_const_v<Ms> && ...)> {};

template <class T>
struct declares_own_members : std::false_type {};
template <lists_members T>
requires requires { &T::forksafe_members; }
struct declares_own_members<T>
    : std::bool_constant<
          std::is_same_v<decltype(&T::forksafe_members), decltype(std::declval<T&>().forksafe_members()) (T::*)()> ||
          std::is_same_v<decltype(&T::forksafe_members),
                         decltype(std::declval<T&>().forksafe_members()) (T::*)() noexcept>> {};

/// What T's forksafe_members() returns: std::tuple<M&...>.
template <lists_members T>
using members_t = decltype(std::declval<T&>().forksafe_members());

} // namespace detail

/// A type that crosses a process boundary by value, with no serialisation
/// code written by its user: what fork_call may return from a child, and
/// what process_pool::submit may send to a worker and back.
/// enable_trivially_serializable<remove_cv_t<T>> decides (see it for what the
/// default accepts); T must in any case be an object type (not a reference,
/// a function or void), and a type that crosses as its bytes must be
/// copy-constructible and trivially destructible.
///
/// A struct of yours crosses member by member once it lists them, in one
/// line of its own:
///
///     auto forksafe_members() { return std::tie(id, name, scores); }
///
/// Every listed member's type must be trivially_serializable (checked,
/// recursively); the struct must be default-constructible (the receiving
/// side builds one with T() and assigns the members it listed; a member left
/// out of the list arrives as T() made it). Declared in the struct itself:
/// a forksafe_members() inherited from a base does not count. Checked at
/// compile time only.
template <class T>
concept trivially_serializable = std::is_object_v<T> && enable_trivially_serializable<std::remove_cv_t<T>> &&
    detail::serializable_by_default<std::remove_cv_t<T>>::shape_ok;

/// Opted out: a mutex's bytes are not its value in another process.
template <>
inline constexpr bool enable_trivially_serializable<pthread_mutex_t> = false;
/// Opted out: a condition variable's bytes are not its value in another process.
template <>
inline constexpr bool enable_trivially_serializable<pthread_cond_t> = false;
/// Opted out: a reader/writer lock's bytes are not its value in another process.
template <>
inline constexpr bool enable_trivially_serializable<pthread_rwlock_t> = false;
/// Opted out: a semaphore's bytes are not its value in another process.
template <>
inline constexpr bool enable_trivially_serializable<sem_t> = false;

namespace detail {

/// How a type crosses: as its bytes, or in the wire form of its shape
/// (detail/wire.hpp writes and reads each).
enum class wire_kind : unsigned char {
  bytes,      ///< its object representation
  members,    ///< its forksafe_members(), in order
  string,     ///< a length, then the characters
  sequence,   ///< std::vector: a count, then the elements
  bit_vector, ///< std::vector<bool>: a count, then the bits packed
  product,    ///< pair, tuple, array with an element that does not cross as bytes: each element
  optional,   ///< a flag, then the value
  variant,    ///< the index, then the alternative
  set,        ///< an associative container: a count, then the elements
};

template <class T>
inline constexpr bool crosses_as_bytes =
    trivially_serializable<T>&& serializable_by_default<std::remove_cv_t<T>>::kind == wire_kind::bytes;

// The default: a type whose bytes are its value. `shape_ok` is what the
// concept needs beyond enable_trivially_serializable: for a type that
// crosses as bytes, a user's opt-in included, copy-construction and trivial
// destruction.
template <class T>
struct serializable_by_default {
  static constexpr wire_kind kind = wire_kind::bytes;
  static constexpr bool shape_ok = std::is_copy_constructible_v<T> && std::is_trivially_destructible_v<T>;
  static constexpr bool value = std::is_trivially_copyable_v<T> && shape_ok && !std::is_pointer_v<T> &&
                                !std::is_member_pointer_v<T> && !std::is_array_v<T> && !lists_members<T>;
};

// A structured type: crosses when `ok`, in the wire form `K`.
template <wire_kind K, bool Ok>
struct structured {
  static constexpr wire_kind kind = K;
  static constexpr bool shape_ok = true;
  static constexpr bool value = Ok;
};

// Products and sums of types that cross as bytes cross as bytes too (their
// bytes are their members' bytes plus a discriminator, although libstdc++
// makes pair and tuple not trivially copyable); otherwise element by element.
template <class... Ts>
using product_of = structured<(crosses_as_bytes<Ts> && ...) ? wire_kind::bytes : wire_kind::product,
                              (trivially_serializable<Ts> && ...)>;

template <lists_members T>
struct serializable_by_default<T> : structured<wire_kind::members, false> {}; // returns no tuple of references
template <lists_members T>
requires(member_refs<members_t<T>>::value) struct serializable_by_default<T>
    : structured<wire_kind::members, declares_own_members<T>::value && std::default_initializable<T> &&
                                         std::is_move_constructible_v<T>&& []<class... Ms>(std::tuple<Ms&...>*) {
                                           return (trivially_serializable<Ms> && ...);
                                         }(static_cast<members_t<T>*>(nullptr))> {
};

// Views: trivially copyable, but their bytes are an address in the child.
template <class C, class Traits>
struct serializable_by_default<std::basic_string_view<C, Traits>> : structured<wire_kind::bytes, false> {};
template <class E, std::size_t N>
struct serializable_by_default<std::span<E, N>> : structured<wire_kind::bytes, false> {};
template <class U>
struct serializable_by_default<std::reference_wrapper<U>> : structured<wire_kind::bytes, false> {};

template <class C>
inline constexpr bool is_character =
    std::is_same_v<C, char> || std::is_same_v<C, wchar_t> || std::is_same_v<C, char8_t> ||
    std::is_same_v<C, char16_t> || std::is_same_v<C, char32_t>;
template <class C, class Traits, class Alloc>
struct serializable_by_default<std::basic_string<C, Traits, Alloc>>
    : structured<wire_kind::string, is_character<C> && std::is_same_v<Traits, std::char_traits<C>> &&
                                        std::is_same_v<Alloc, std::allocator<C>>> {};

template <class U, class Alloc>
struct serializable_by_default<std::vector<U, Alloc>>
    : structured<wire_kind::sequence, trivially_serializable<U> && std::is_same_v<Alloc, std::allocator<U>>> {};
template <class Alloc>
struct serializable_by_default<std::vector<bool, Alloc>>
    : structured<wire_kind::bit_vector, std::is_same_v<Alloc, std::allocator<bool>>> {};

template <class A, class B>
struct serializable_by_default<std::pair<A, B>> : product_of<A, B> {};
template <class... Ts>
struct serializable_by_default<std::tuple<Ts...>> : product_of<Ts...> {};
template <class U, std::size_t N>
struct serializable_by_default<std::array<U, N>> : product_of<U> {};
template <class U>
struct serializable_by_default<std::optional<U>>
    : structured<crosses_as_bytes<U> ? wire_kind::bytes : wire_kind::optional, trivially_serializable<U>> {};
template <class... Ts>
struct serializable_by_default<std::variant<Ts...>>
    : structured<(crosses_as_bytes<Ts> && ...) ? wire_kind::bytes : wire_kind::variant,
                 (trivially_serializable<Ts> && ...)> {};

// Associative containers: their order (or hash) is rebuilt on the other
// side, so what orders them must hold no state.
template <class F>
inline constexpr bool stateless = std::is_empty_v<F>&& std::default_initializable<F>;
template <class K, class Cmp, class Alloc>
struct serializable_by_default<std::set<K, Cmp, Alloc>>
    : structured<wire_kind::set,
                 trivially_serializable<K> && stateless<Cmp> && std::is_same_v<Alloc, std::allocator<K>>> {};
template <class K, class Cmp, class Alloc>
struct serializable_by_default<std::multiset<K, Cmp, Alloc>> : serializable_by_default<std::set<K, Cmp, Alloc>> {};
template <class K, class V, class Cmp, class Alloc>
struct serializable_by_default<std::map<K, V, Cmp, Alloc>>
    : structured<wire_kind::set, trivially_serializable<K> && trivially_serializable<V> && stateless<Cmp> &&
                                     std::is_same_v<Alloc, std::allocator<std::pair<const K, V>>>> {};
template <class K, class V, class Cmp, class Alloc>
struct serializable_by_default<std::multimap<K, V, Cmp, Alloc>> : serializable_by_default<std::map<K, V, Cmp, Alloc>> {
};
template <class K, class Hash, class Eq, class Alloc>
struct serializable_by_default<std::unordered_set<K, Hash, Eq, Alloc>>
    : structured<wire_kind::set, trivially_serializable<K> && stateless<Hash> && stateless<Eq> &&
                                     std::is_same_v<Alloc, std::allocator<K>>> {};
template <class K, class Hash, class Eq, class Alloc>
struct serializable_by_default<std::unordered_multiset<K, Hash, Eq, Alloc>>
    : serializable_by_default<std::unordered_set<K, Hash, Eq, Alloc>> {};
template <class K, class V, class Hash, class Eq, class Alloc>
struct serializable_by_default<std::unordered_map<K, V, Hash, Eq, Alloc>>
    : structured<wire_kind::set, trivially_serializable<K> && trivially_serializable<V> && stateless<Hash> &&
                                     stateless<Eq> && std::is_same_v<Alloc, std::allocator<std::pair<const K, V>>>> {};
template <class K, class V, class Hash, class Eq, class Alloc>
struct serializable_by_default<std::unordered_multimap<K, V, Hash, Eq, Alloc>>
    : serializable_by_default<std::unordered_map<K, V, Hash, Eq, Alloc>> {};

/// The first type inside T that does not cross (T itself when T is not a
/// container forksafe looks into, or when every element crosses but the
/// container itself does not: a custom allocator, a stateful comparator);
/// void when T crosses. What a diagnostic names as the culprit.
template <class T>
struct culprit {
  using type = std::conditional_t<trivially_serializable<T>, void, T>;
};
template <class T>
using culprit_t = typename culprit<T>::type;

template <class Self, class... Elems>
struct first_culprit {
  using type = Self;
};
template <class Self, class E, class... Rest>
struct first_culprit<Self, E, Rest...> {
  using type =
      std::conditional_t<std::is_void_v<culprit_t<E>>, typename first_culprit<Self, Rest...>::type, culprit_t<E>>;
};
template <class T, class... Elems>
struct culprit_among {
  using type = std::conditional_t<trivially_serializable<T>, void, typename first_culprit<T, Elems...>::type>;
};

template <class U, class A>
struct culprit<std::vector<U, A>> : culprit_among<std::vector<U, A>, U> {};
template <class U, std::size_t N>
struct culprit<std::array<U, N>> : culprit_among<std::array<U, N>, U> {};
template <class U>
struct culprit<std::optional<U>> : culprit_among<std::optional<U>, U> {};
template <class A, class B>
struct culprit<std::pair<A, B>> : culprit_among<std::pair<A, B>, A, B> {};
template <class... Ts>
struct culprit<std::tuple<Ts...>> : culprit_among<std::tuple<Ts...>, Ts...> {};
template <class... Ts>
struct culprit<std::variant<Ts...>> : culprit_among<std::variant<Ts...>, Ts...> {};
template <class K, class C, class A>
struct culprit<std::set<K, C, A>> : culprit_among<std::set<K, C, A>, K> {};
template <class K, class V, class C, class A>
struct culprit<std::map<K, V, C, A>> : culprit_among<std::map<K, V, C, A>, K, V> {};
template <class K, class H, class E, class A>
struct culprit<std::unordered_set<K, H, E, A>> : culprit_among<std::unordered_set<K, H, E, A>, K> {};
template <class K, class V, class H, class E, class A>
struct culprit<std::unordered_map<K, V, H, E, A>> : culprit_among<std::unordered_map<K, V, H, E, A>, K, V> {};
template <class T, class Members>
struct members_culprit {
  using type = std::conditional_t<trivially_serializable<T>, void, T>;
};
template <class T, class... Ms>
struct members_culprit<T, std::tuple<Ms&...>> : culprit_among<T, Ms...> {};
template <lists_members T>
struct culprit<T> : members_culprit<T, members_t<T>> {};

// The first error line when a type cannot cross: it must name the function,
// the culprit and the remedy. FORKSAFE_DETAIL_REJECTION(name) declares, for
// one such diagnostic, a deleted function whose name is the sentence;
// FORKSAFE_DETAIL_REJECT(name, Culprit, Within, message) reports it. GCC's
// line shows a deleted function's name and template arguments; Clang's,
// a static_assert's condition (with its arguments) and message.
#define FORKSAFE_DETAIL_REJECTION(name)                                                                                \
  template <class Culprit, class Within>                                                                               \
  void name() = delete;                                                                                                \
  template <class Culprit, class Within>                                                                               \
  inline constexpr bool name##_ok = false
#if defined(__clang__)
#define FORKSAFE_DETAIL_REJECT(name, culprit, within, message) static_assert(name##_ok<culprit, within>, message)
#else
#define FORKSAFE_DETAIL_REJECT(name, culprit, within, message) name<culprit, within>()
#endif

// What fork_call transports for a call returning R: void travels as an empty
// frame, so the checks can name trivially_serializable directly.
struct void_result {};
template <class R>
using transported_t = std::conditional_t<std::is_void_v<R>, void_result, std::remove_cv_t<R>>;

template <class F, class... Args>
using call_result_t = std::remove_cv_t<std::invoke_result_t<F, Args...>>;

} // namespace detail

} // namespace forksafe

#endif // FORKSAFE_TRIVIALLY_SERIALIZABLE_HPP
