// One rank of a real multi-process job, launched by torchrun or by hand from tests/parallel. It joins
// the world from the environment, runs every collective with checkable results, and prints
// "parallel_smoke ok rank R of N". With --die-after-first this rank exits abruptly (no teardown, like
// a crash) after the first collective, so the surviving ranks' error handling can be checked.
//
// With --hang-after-first the rank stays alive but skips the next collectives for timeout + 3 s, so
// its peers must time out.
//
// Usage: parallel_smoke [--die-after-first RANK] [--hang-after-first RANK] [--timeout-s S] [--backend B]
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "agenttune/parallel/process_group.h"

using namespace agenttune::parallel;

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "parallel_smoke: check failed: %s\n", what.c_str());
    std::exit(3);
  }
}

int run(int argc, char** argv) {
  int die_rank = -1, hang_rank = -1;
  ProcessGroupOptions opts;
  opts.timeout = std::chrono::seconds(60);
  opts.connect_timeout = std::chrono::seconds(60);
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--die-after-first") die_rank = std::atoi(argv[i + 1]);
    else if (a == "--hang-after-first") hang_rank = std::atoi(argv[i + 1]);
    else if (a == "--timeout-s") opts.timeout = std::chrono::seconds(std::atoi(argv[i + 1]));
    else if (a == "--backend") {
      auto b = agenttune::parse_enum<Backend>(argv[i + 1]);
      check(b.has_value(), std::string("--backend is one of ") + agenttune::enum_name_list<Backend>());
      opts.backend = *b;
    }
    else check(false, "unknown flag " + a);
  }
  WorldInfo w = world_from_env(process_env());
  auto dist = ProcessGroup::create(w, c10::Device(c10::kCPU), opts);
  const int r = dist->rank(), n = dist->world_size();

  // Sum and max of rank-dependent values.
  auto t = at::full({4}, static_cast<float>(r + 1));
  dist->all_reduce(t, Reduce::Sum, "ranks+1");
  check(t.eq(n * (n + 1) / 2.0f).all().item<bool>(), "all_reduce sum");
  if (r == die_rank) {
    std::fflush(nullptr);
    std::_Exit(7);  // a crash: no destructors, no goodbye to the peers
  }
  if (r == hang_rank) std::this_thread::sleep_for(opts.timeout + std::chrono::seconds(3));
  // The survivors enter the next collective only after the peer is gone (or stuck).
  if (die_rank >= 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  check(dist->all_reduce(static_cast<double>(r), Reduce::Max, "max rank") == n - 1, "all_reduce max");

  auto b = r == 0 ? at::arange(6, at::kFloat) : at::zeros({6});
  dist->broadcast(b, 0, "arange");
  check(b.equal(at::arange(6, at::kFloat)), "broadcast");

  auto gathered = at::empty({2 * n}, at::kLong);
  dist->all_gather_into_tensor(gathered, at::full({2}, static_cast<int64_t>(r), at::kLong), "rank ids");
  check(gathered.equal(at::arange(n, at::kLong).repeat_interleave(2)), "all_gather_into_tensor");

  auto shard = at::empty({3});
  dist->reduce_scatter_tensor(shard, at::arange(3 * n, at::kFloat), "arange");
  check(shard.equal(at::arange(3 * r, 3 * r + 3, at::kFloat) * n), "reduce_scatter_tensor");

  auto names = dist->all_gather_bytes(fmt::format("rank-{}", r), "names");
  for (int i = 0; i < n; ++i) check(names[i] == fmt::format("rank-{}", i), "all_gather_bytes");

  dist->barrier("end");
  std::printf("parallel_smoke ok rank %d of %d (local %d of %d, %s)\n", r, n, w.local_rank, w.local_world_size,
              w.launcher.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parallel_smoke: error: %s\n", e.what());
    return 2;
  }
}
