// SPDX-License-Identifier: MIT
//
// The second article's program in C++: an outer process pool whose tasks
// each run an inner thread pool and return plain values.
//
// Its mistake was to return the inner futures themselves from the process
// task; Python found out at run time ("can't pickle _thread.RLock
// objects"). Here it does not compile:
//
//     pool.submit([] {
//       std::vector<std::future<int>> inner = ...;
//       return inner;   // error: ... trivially_serializable ... (see
//     });               // tests/compile_fail/pool_returns_futures.cpp)
//
// The fix is the article's own: return the plain results. Exits 0 when every
// result is the one its inner task computed.

#include <forksafe/process_pool.hpp>   // process_pool
#include <forksafe/process_result.hpp> // process_result: the handle submit() returns

#include <array>  // plain results: trivially serializable
#include <cstdio> // std::printf
#include <future> // the inner thread pool (std::async)
#include <vector> // inner futures, outer handles

namespace {

// One process task: runs `n` inner tasks on threads, returns their results.
std::array<int, 3> outer_task(int n) {
  std::vector<std::future<int>> inner;
  for (int i = 0; i < 3; ++i) {
    inner.push_back(std::async(std::launch::async, [n, i] { return n * 10 + i * i; }));
  }
  std::array<int, 3> plain{};
  for (int i = 0; i < 3; ++i) plain[static_cast<std::size_t>(i)] = inner[static_cast<std::size_t>(i)].get();
  return plain; // only plain data crosses back
}

} // namespace

int main() {
  forksafe::process_pool pool(2);
  std::vector<forksafe::process_result<std::array<int, 3>>> outer;
  for (int n = 0; n < 3; ++n) outer.push_back(pool.submit(outer_task, n));
  int n = 0, wrong = 0;
  for (auto& r : outer) {
    for (int v : r.get()) std::printf("result = %d\n", v);
    wrong += r.get() != std::array<int, 3>{n * 10, n * 10 + 1, n * 10 + 4} ? 1 : 0; // outer_task(n)'s values
    ++n;
  }
  return wrong == 0 ? 0 : 1;
}
