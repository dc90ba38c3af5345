// SPDX-License-Identifier: MIT
//
// The second article's program in C++: an outer process pool whose tasks
// each run an inner thread pool and return a list of their results.
//
// Its mistake was to return the inner futures themselves from the process
// task; Python found out at run time ("can't pickle _thread.RLock
// objects"). Here it does not compile, and the first error line says why:
//
//     pool.submit([] {
//       std::vector<std::future<int>> inner = ...;
//       return inner;   // error: ...process_pool_submit_result_cannot_cross_a_process_boundary__
//     });               //   return_plain_values...[with Culprit = std::future<int>; ...]
//                       // (tests/compile_fail/pool_returns_futures.cpp)
//
// The fix is the article's own: return the results, a list. Here a
// std::vector<std::string>, which crosses in its wire form like any plain
// data. Exits 0 when every line is the one its inner task computed.

#include <forksafe/process_pool.hpp>   // process_pool
#include <forksafe/process_result.hpp> // process_result: the handle submit() returns

#include <cstdio> // std::printf
#include <future> // the inner thread pool (std::async)
#include <string> // the results
#include <vector> // inner futures, the list returned, outer handles

namespace {

std::string line(int n, int i) {
  return "task " + std::to_string(n) + "." + std::to_string(i) + " = " + std::to_string(n * 10 + i * i);
}

// One process task: runs 3 inner tasks on threads, returns their results.
std::vector<std::string> outer_task(int n) {
  std::vector<std::future<std::string>> inner;
  for (int i = 0; i < 3; ++i) inner.push_back(std::async(std::launch::async, [n, i] { return line(n, i); }));
  std::vector<std::string> results;
  for (auto& f : inner) results.push_back(f.get());
  return results; // a list of plain values crosses back; the futures stay here
}

} // namespace

int main() {
  forksafe::process_pool pool(2);
  std::vector<forksafe::process_result<std::vector<std::string>>> outer;
  for (int n = 0; n < 3; ++n) outer.push_back(pool.submit(outer_task, n));
  int n = 0, wrong = 0;
  for (auto& r : outer) {
    const std::vector<std::string>& results = r.get();
    for (const std::string& s : results) std::printf("%s\n", s.c_str());
    wrong += results != std::vector<std::string>{line(n, 0), line(n, 1), line(n, 2)} ? 1 : 0;
    ++n;
  }
  return wrong == 0 ? 0 : 1;
}
