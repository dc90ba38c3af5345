// SPDX-License-Identifier: MIT
//
// forksafe/detail/wire.hpp: the wire form of a trivially_serializable value
// that does not cross as its bytes (a std::string, a vector, a map, a struct
// that lists its members): how one side writes it and the other reads it
// back, checking every length against what arrived.
//
// The form, per wire_kind (trivially_serializable.hpp): a type that crosses
// as bytes is its object representation; a string or a vector is a 64-bit
// count, then its elements (elements that cross as bytes as one block,
// aligned to their alignment from the start of the buffer, which every
// transport aligns to 64); an optional is a flag byte, then its value; a
// variant a 32-bit index, then its alternative; a product or a struct that
// lists its members, each element in order; an associative container a
// count, then its elements. Elements whose form can be empty (a struct
// listing no members) are each preceded by one byte, so a count can never
// claim more elements than there are bytes.
//
// Reading trusts nothing: every count is checked against the bytes left
// before anything is allocated for it (so what a reader allocates is at most
// a small multiple of what arrived), a flag or an index must be one the type
// has, a unique container must not repeat a key, and the value must end
// exactly where the bytes do. A failure says why, in a sentence naming the
// type.

#ifndef FORKSAFE_DETAIL_WIRE_HPP
#define FORKSAFE_DETAIL_WIRE_HPP

#include "../trivially_serializable.hpp"
#include "config.hpp"
#include "shared_region.hpp" // populate_for_writing

#include <array>       // std::array
#include <cstddef>     // std::size_t
#include <cstdint>     // the counts
#include <cstring>     // std::memcpy, std::memset
#include <new>         // placement new, std::launder
#include <string>      // the failure's sentence
#include <string_view> // type names
#include <tuple>       // std::apply
#include <type_traits> // the kinds
#include <utility>     // std::move, std::index_sequence
#include <variant>     // std::bad_variant_access

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// Every buffer a value is written to or read from starts at this alignment.
inline constexpr std::size_t wire_alignment = 64;

/// "std::vector<int>" for T, from the compiler's own spelling; no RTTI.
template <class T>
constexpr std::string_view type_name() noexcept {
  constexpr std::string_view f = __PRETTY_FUNCTION__;
  constexpr std::string_view key = "T = ";
  constexpr std::size_t start = f.find(key);
  if constexpr (start == std::string_view::npos) {
    return "the value";
  } else {
    constexpr std::size_t from = start + key.size();
    constexpr std::size_t semi = f.find(';', from);
    constexpr std::size_t end = semi == std::string_view::npos ? f.rfind(']') : semi;
    return f.substr(from, end - from);
  }
}

template <class T>
struct is_std_array : std::false_type {};
template <class U, std::size_t N>
struct is_std_array<std::array<U, N>> : std::true_type {};

template <class T>
inline constexpr wire_kind kind_of = crosses_as_bytes<T> ? wire_kind::bytes : serializable_by_default<T>::kind;

/// Whether T is written in its wire form rather than as its bytes.
template <class T>
inline constexpr bool needs_wire_form = !std::is_void_v<T> && !crosses_as_bytes<T>;

template <class T>
consteval std::size_t min_wire_size();

template <class... Ts>
consteval std::size_t min_sum(std::tuple<Ts...>*) {
  return (std::size_t{0} + ... + min_wire_size<Ts>());
}
template <class A, class B>
consteval std::size_t min_sum(std::pair<A, B>*) {
  return min_wire_size<A>() + min_wire_size<B>();
}
template <class... Ms>
consteval std::size_t min_members(std::tuple<Ms&...>*) {
  return (std::size_t{0} + ... + min_wire_size<Ms>());
}

/// The fewest bytes any value of T takes on the wire.
template <class T>
consteval std::size_t min_wire_size() {
  constexpr wire_kind k = kind_of<T>;
  if constexpr (k == wire_kind::bytes) {
    return sizeof(T);
  } else if constexpr (k == wire_kind::string || k == wire_kind::sequence || k == wire_kind::bit_vector ||
                       k == wire_kind::set) {
    return 8;
  } else if constexpr (k == wire_kind::optional) {
    return 1;
  } else if constexpr (k == wire_kind::variant) {
    return 4;
  } else if constexpr (k == wire_kind::members) {
    return min_members(static_cast<members_t<T>*>(nullptr));
  } else if constexpr (is_std_array<T>::value) {
    return std::tuple_size_v<T> * min_wire_size<typename T::value_type>();
  } else {
    return min_sum(static_cast<T*>(nullptr)); // pair, tuple
  }
}

// ---- writing ----------------------------------------------------------------

/// Where a value is written: counts the bytes (data == nullptr) or writes
/// them. The same walk does both, so the size and the bytes always agree.
class wire_writer {
public:
  wire_writer() noexcept = default;
  explicit wire_writer(unsigned char* data) noexcept : data_(data) {}

  void put(const void* p, std::size_t n) noexcept {
    if (data_ != nullptr && n != 0) std::memcpy(data_ + pos_, p, n);
    pos_ += n;
  }
  template <class U>
  void put_word(U v) noexcept {
    put(&v, sizeof v);
  }
  void align(std::size_t a) noexcept {
    const std::size_t pad = (a - pos_ % a) % a;
    if (data_ != nullptr && pad != 0) std::memset(data_ + pos_, 0, pad);
    pos_ += pad;
  }
  [[nodiscard]] std::size_t size() const noexcept { return pos_; }

private:
  unsigned char* data_ = nullptr;
  std::size_t pos_ = 0;
};

template <class T>
void write_value(wire_writer& out, const T& v);

template <class C>
void write_elements(wire_writer& out, const C& c) {
  using E = std::remove_cv_t<typename C::value_type>;
  for (const auto& e : c) {
    if constexpr (min_wire_size<E>() == 0) out.put_word(std::uint8_t{1});
    write_value(out, e);
  }
}

template <class T>
void write_value(wire_writer& out, const T& v) {
  constexpr wire_kind k = kind_of<T>;
  if constexpr (k == wire_kind::bytes) {
    out.put(&v, sizeof(T));
  } else if constexpr (k == wire_kind::string) {
    using C = typename T::value_type;
    out.put_word(std::uint64_t{v.size()});
    out.align(alignof(C));
    out.put(v.data(), v.size() * sizeof(C));
  } else if constexpr (k == wire_kind::sequence) {
    using E = typename T::value_type;
    out.put_word(std::uint64_t{v.size()});
    if constexpr (crosses_as_bytes<E> && alignof(E) <= wire_alignment) {
      out.align(alignof(E));
      out.put(v.data(), v.size() * sizeof(E));
    } else {
      write_elements(out, v);
    }
  } else if constexpr (k == wire_kind::bit_vector) {
    out.put_word(std::uint64_t{v.size()});
    for (std::size_t i = 0; i < v.size(); i += 8) {
      std::uint8_t b = 0;
      for (std::size_t j = 0; j < 8 && i + j < v.size(); ++j) b = static_cast<std::uint8_t>(b | (v[i + j] << j));
      out.put_word(b);
    }
  } else if constexpr (k == wire_kind::set) {
    out.put_word(std::uint64_t{v.size()});
    write_elements(out, v);
  } else if constexpr (k == wire_kind::optional) {
    out.put_word(std::uint8_t{v.has_value()});
    if (v) write_value(out, *v);
  } else if constexpr (k == wire_kind::variant) {
    if (v.valueless_by_exception()) throw std::bad_variant_access(); // nothing to send: the child reports it
    out.put_word(static_cast<std::uint32_t>(v.index()));
    std::visit([&out](const auto& alt) { write_value(out, alt); }, v);
  } else if constexpr (k == wire_kind::members) {
    // forksafe_members() is not const (it returns references to assign
    // through on the reading side); it only names members, so calling it on
    // a const object modifies nothing.
    std::apply([&out](const auto&... m) { (write_value(out, m), ...); }, const_cast<T&>(v).forksafe_members());
  } else if constexpr (is_std_array<T>::value) {
    write_elements(out, v);
  } else {
    std::apply([&out](const auto&... e) { (write_value(out, e), ...); }, v); // pair, tuple
  }
}

/// The bytes `v` takes on the wire.
template <class T>
std::size_t wire_size(const T& v) {
  wire_writer counter;
  write_value(counter, v);
  return counter.size();
}

/// Writes `v` at `data` (wire_alignment-aligned, wire_size(v) bytes).
template <class T>
void write_wire(unsigned char* data, const T& v) {
  wire_writer out(data);
  write_value(out, v);
}

// ---- reading ----------------------------------------------------------------

/// Reads a value back from `size` bytes at `data` (wire_alignment-aligned),
/// trusting none of them. On the first defect it stops and keeps a sentence
/// saying what was wrong.
class wire_reader {
public:
  wire_reader(const unsigned char* data, std::size_t size) noexcept : data_(data), size_(size) {}

  [[nodiscard]] std::size_t left() const noexcept { return size_ - pos_; }
  [[nodiscard]] bool failed() const noexcept { return !defect_.empty(); }
  [[nodiscard]] const std::string& defect() const noexcept { return defect_; }

  /// The next `n` bytes, or nullptr (and a defect) if fewer arrived.
  const unsigned char* take(std::size_t n, std::string_view what) {
    if (failed()) return nullptr;
    if (n > left()) {
      fail(std::string(what) + ": " + std::to_string(n) + " bytes needed, but only " + std::to_string(left()) +
           " arrived");
      return nullptr;
    }
    const unsigned char* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  template <class U>
  bool take_word(U& v, std::string_view what) {
    const unsigned char* p = take(sizeof v, what);
    if (p != nullptr) std::memcpy(&v, p, sizeof v);
    return p != nullptr;
  }
  bool align(std::size_t a, std::string_view what) {
    const std::size_t pad = (a - pos_ % a) % a;
    return take(pad, what) != nullptr;
  }
  /// A count of elements of at least `min_each` bytes each (at least 1):
  /// refused unless that many could have arrived, before anything is
  /// allocated for them.
  bool take_count(std::uint64_t& n, std::size_t min_each, std::string_view what) {
    if (!take_word(n, what)) return false;
    const std::size_t each = min_each == 0 ? 1 : min_each;
    if (n > left() / each) {
      fail(std::string(what) + ": a count of " + std::to_string(n) + " elements, but only " + std::to_string(left()) +
           " bytes arrived");
      return false;
    }
    return true;
  }
  void fail(std::string why) {
    if (!failed()) defect_ = std::move(why);
  }

private:
  const unsigned char* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
  std::string defect_;
};

/// Room for one T being read: constructed only once read in full.
template <class T>
class wire_slot {
public:
  wire_slot() noexcept {} // NOLINT(modernize-use-equals-default): so a std::tuple of them does not zero bytes_
  wire_slot(const wire_slot&) = delete;
  wire_slot& operator=(const wire_slot&) = delete;
  ~wire_slot() {
    if (built_) get().~T();
  }
  template <class... A>
  T& emplace(A&&... a) {
    ::new (static_cast<void*>(bytes_)) T(std::forward<A>(a)...);
    built_ = true;
    return get();
  }
  /// Its bytes, copied in: a T that crosses as bytes is one once they are.
  void adopt_bytes(const unsigned char* p) noexcept {
    std::memcpy(bytes_, p, sizeof(T));
    built_ = true;
  }
  [[nodiscard]] bool built() const noexcept { return built_; }
  [[nodiscard]] T& get() noexcept { return *std::launder(reinterpret_cast<T*>(bytes_)); }

private:
  alignas(T) unsigned char bytes_[sizeof(T)]; // NOLINT(modernize-avoid-c-arrays): raw storage
  bool built_ = false;
};

template <class T>
bool read_value(wire_reader& in, wire_slot<T>& out);

template <class T>
bool read_into(wire_reader& in, T& target) {
  wire_slot<T> s;
  if (!read_value(in, s)) return false;
  target = std::move(s.get());
  return true;
}

template <class C, class E, class Add>
bool read_elements(wire_reader& in, std::uint64_t n, Add&& add) {
  for (std::uint64_t i = 0; i < n; ++i) {
    if constexpr (min_wire_size<E>() == 0) {
      std::uint8_t marker = 0;
      if (!in.take_word(marker, type_name<C>())) return false;
    }
    wire_slot<E> e;
    if (!read_value(in, e)) return false;
    if (!add(std::move(e.get()))) {
      in.fail(std::string(type_name<C>()) + ": a key arrived twice");
      return false;
    }
  }
  return true;
}

template <class T, std::size_t... I>
bool read_product(wire_reader& in, wire_slot<T>& out, std::index_sequence<I...>) {
  using tuple_like = T;
  std::tuple<wire_slot<std::remove_cv_t<std::tuple_element_t<I, tuple_like>>>...> parts;
  const bool ok = (read_value(in, std::get<I>(parts)) && ...);
  if (ok) {
    if constexpr (is_std_array<T>::value) {
      out.emplace(T{std::move(std::get<I>(parts).get())...});
    } else {
      out.emplace(std::move(std::get<I>(parts).get())...);
    }
  }
  return ok;
}

template <class T, std::size_t... I>
bool read_alternative(wire_reader& in, wire_slot<T>& out, std::uint32_t index, std::index_sequence<I...>) {
  bool ok = false;
  (void)((index == I ? (
                           ok =
                               [&] {
                                 wire_slot<std::variant_alternative_t<I, T>> alt;
                                 if (!read_value(in, alt)) return false;
                                 out.emplace(std::in_place_index<I>, std::move(alt.get()));
                                 return true;
                               }(),
                           true)
                     : false) ||
         ...);
  return ok;
}

/// What an associative container's element is read as: a map's as a
/// std::pair of a non-const key and the mapped value.
template <class T>
struct set_element {
  using type = typename T::key_type;
};
template <class T>
requires requires { typename T::mapped_type; }
struct set_element<T> {
  using type = std::pair<typename T::key_type, typename T::mapped_type>;
};

template <class T>
bool read_value(wire_reader& in, wire_slot<T>& out) {
  constexpr wire_kind k = kind_of<T>;
  constexpr std::string_view name = type_name<T>();
  if constexpr (k == wire_kind::bytes) {
    const unsigned char* p = in.take(sizeof(T), name);
    if (p == nullptr) return false;
    out.adopt_bytes(p);
    return true;
  } else if constexpr (k == wire_kind::string) {
    using C = typename T::value_type;
    std::uint64_t n = 0;
    if (!in.take_count(n, sizeof(C), name) || !in.align(alignof(C), name)) return false;
    const unsigned char* p = in.take(static_cast<std::size_t>(n) * sizeof(C), name);
    if (p == nullptr) return false;
    out.emplace(reinterpret_cast<const C*>(p), static_cast<std::size_t>(n));
    return true;
  } else if constexpr (k == wire_kind::sequence) {
    using E = typename T::value_type;
    std::uint64_t n = 0;
    if (!in.take_count(n, min_wire_size<E>(), name)) return false;
    if constexpr (crosses_as_bytes<E> && alignof(E) <= wire_alignment) {
      if (!in.align(alignof(E), name)) return false;
      const unsigned char* p = in.take(static_cast<std::size_t>(n) * sizeof(E), name);
      if (p == nullptr) return false;
      const E* first = std::launder(reinterpret_cast<const E*>(p));
      T& v = out.emplace();
      v.reserve(static_cast<std::size_t>(n));
      // A large block lands in fresh pages: fault them in with one call
      // rather than one trap per page as the copy touches them.
      if (n * sizeof(E) >= (std::size_t{1} << 20))
        populate_for_writing(v.data(), static_cast<std::size_t>(n) * sizeof(E));
      v.insert(v.end(), first, first + n);
      return true;
    } else {
      T& v = out.emplace();
      v.reserve(static_cast<std::size_t>(n));
      return read_elements<T, E>(in, n, [&v](E&& e) {
        v.push_back(std::move(e));
        return true;
      });
    }
  } else if constexpr (k == wire_kind::bit_vector) {
    std::uint64_t n = 0;
    if (!in.take_word(n, name)) return false;
    const std::uint64_t packed = n / 8 + (n % 8 != 0 ? 1 : 0); // no overflow for any n
    const unsigned char* p = packed <= in.left() ? in.take(static_cast<std::size_t>(packed), name) : nullptr;
    if (p == nullptr) {
      in.fail(std::string(name) + ": a count of " + std::to_string(n) + " bits, but only " + std::to_string(in.left()) +
              " bytes arrived");
      return false;
    }
    const auto bytes = static_cast<std::size_t>(packed);
    if (p == nullptr) return false;
    if (n % 8 != 0 && (p[bytes - 1] >> (n % 8)) != 0) {
      in.fail(std::string(name) + ": bits set past its size");
      return false;
    }
    T& v = out.emplace(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < n; ++i) v[i] = ((p[i / 8] >> (i % 8)) & 1U) != 0;
    return true;
  } else if constexpr (k == wire_kind::set) {
    using elem = typename set_element<T>::type;
    std::uint64_t n = 0;
    if (!in.take_count(n, min_wire_size<elem>(), name)) return false;
    T& c = out.emplace();
    if constexpr (requires { c.reserve(std::size_t{}); }) c.reserve(static_cast<std::size_t>(n));
    return read_elements<T, elem>(in, n, [&c](elem&& e) {
      if constexpr (requires { c.emplace(std::move(e)).second; }) {
        return c.emplace(std::move(e)).second; // unique keys: a repeat is a defect
      } else {
        c.emplace(std::move(e));
        return true;
      }
    });
  } else if constexpr (k == wire_kind::optional) {
    std::uint8_t engaged = 0;
    if (!in.take_word(engaged, name)) return false;
    if (engaged > 1) {
      in.fail(std::string(name) + ": a flag of " + std::to_string(engaged) + ", neither 0 nor 1");
      return false;
    }
    if (engaged == 0) {
      out.emplace();
      return true;
    }
    wire_slot<typename T::value_type> inner;
    if (!read_value(in, inner)) return false;
    out.emplace(std::in_place, std::move(inner.get()));
    return true;
  } else if constexpr (k == wire_kind::variant) {
    std::uint32_t index = 0;
    if (!in.take_word(index, name)) return false;
    if (index >= std::variant_size_v<T>) {
      in.fail(std::string(name) + ": alternative " + std::to_string(index) + " of " +
              std::to_string(std::variant_size_v<T>));
      return false;
    }
    return read_alternative(in, out, index, std::make_index_sequence<std::variant_size_v<T>>{});
  } else if constexpr (k == wire_kind::members) {
    T& v = out.emplace();
    return std::apply([&in](auto&... m) { return (read_into(in, m) && ...); }, v.forksafe_members());
  } else {
    return read_product(in, out, std::make_index_sequence<std::tuple_size_v<T>>{}); // pair, tuple, array
  }
}

/// Reads a whole T from `size` bytes at `data`: false (and in.defect()) unless
/// it reads cleanly and ends exactly at the last byte.
template <class T>
bool read_wire(wire_reader& in, wire_slot<T>& out) {
  if (!read_value(in, out)) return false;
  if (in.left() != 0) {
    in.fail(std::string(type_name<T>()) + ": " + std::to_string(in.left()) + " bytes left over after the value");
    return false;
  }
  return true;
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_WIRE_HPP
