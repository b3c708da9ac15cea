// Ranks as threads in one process over a shared in-process HashStore, each with its own Gloo
// group (as PyTorch's own ProcessGroupGlooTest does): fast, no ports, fine on 2 cores.
#include "agenttune/parallel/process_group.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <thread>

#include "agenttune/util/error.h"

using namespace agenttune;
using namespace agenttune::parallel;
using namespace std::chrono_literals;

namespace {

ProcessGroupOptions fast_options() {
  ProcessGroupOptions o;
  o.timeout = 5s;
  o.connect_timeout = 10s;
  return o;
}

// Runs fn(dist) on `n` thread ranks; returns each rank's error message ("" when it succeeded).
std::vector<std::string> run_ranks(int n, const std::function<void(ProcessGroup&)>& fn, ProcessGroupOptions opts = fast_options()) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::string> errors(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        ProcessGroup d(store, r, n, c10::Device(c10::kCPU), opts);
        fn(d);
      } catch (const std::exception& e) {
        errors[r] = e.what();
        if (errors[r].empty()) errors[r] = "(empty message)";
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

void expect_all_ok(const std::vector<std::string>& errors) {
  for (size_t r = 0; r < errors.size(); ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

}  // namespace

TEST(ProcessGroup, CollectivesOnTwoRanks) {
  expect_all_ok(run_ranks(2, [](ProcessGroup& d) {
    const int r = d.rank();
    EXPECT_EQ(d.backend_name(), "gloo");
    EXPECT_EQ(d.is_main(), r == 0);

    auto t = at::tensor({1.0f + r, 10.0f * r});
    d.all_reduce(t, Reduce::Sum, "sum");
    EXPECT_TRUE(t.equal(at::tensor({3.0f, 10.0f})));
    auto m = at::tensor({static_cast<int64_t>(r), static_cast<int64_t>(-r)});
    d.all_reduce(m, Reduce::Max, "max");
    EXPECT_TRUE(m.equal(at::tensor({int64_t{1}, int64_t{0}})));
    EXPECT_EQ(d.all_reduce(2.5 * r, Reduce::Min, "min"), 0.0);
    EXPECT_EQ(d.all_reduce(0.25 + r, Reduce::Sum, "loss"), 1.5);

    // A non-contiguous view is reduced in place too.
    auto base = at::full({3, 2}, static_cast<float>(r + 1));
    auto col = base.select(1, 0);
    d.all_reduce(col, Reduce::Sum, "column");
    EXPECT_TRUE(base.select(1, 0).eq(3.0f).all().item<bool>());
    EXPECT_TRUE(base.select(1, 1).eq(static_cast<float>(r + 1)).all().item<bool>());

    auto b = r == 1 ? at::arange(5, at::kFloat) : at::zeros({5});
    d.broadcast(b, 1, "from rank 1");
    EXPECT_TRUE(b.equal(at::arange(5, at::kFloat)));

    auto shard = at::full({3}, static_cast<float>(r), at::kBFloat16);
    auto full = at::empty({6}, at::kBFloat16);
    d.all_gather_into_tensor(full, shard, "bf16 shards");
    EXPECT_TRUE(full.equal(at::tensor({0.f, 0.f, 0.f, 1.f, 1.f, 1.f}).to(at::kBFloat16)));

    auto grads = at::arange(4, at::kFloat) + 100 * r;  // rank 0: 0..3, rank 1: 100..103
    auto mine = at::empty({2});
    d.reduce_scatter_tensor(mine, grads, "grads");
    EXPECT_TRUE(mine.equal(r == 0 ? at::tensor({100.f, 102.f}) : at::tensor({104.f, 106.f})));

    auto names = d.all_gather_bytes(r == 0 ? std::string() : std::string("rank one\0bytes", 14), "names");
    ASSERT_EQ(names.size(), 2u);
    EXPECT_EQ(names[0], "");
    EXPECT_EQ(names[1], std::string("rank one\0bytes", 14));

    d.barrier("end");
  }));
}

TEST(ProcessGroup, ShapeMistakesAreErrorsNotHangs) {
  expect_all_ok(run_ranks(2, [](ProcessGroup& d) {
    auto out = at::empty({5});
    EXPECT_THROW(d.all_gather_into_tensor(out, at::zeros({3}), "x"), Error);
    EXPECT_THROW(d.reduce_scatter_tensor(out, at::zeros({7}), "x"), Error);
    auto t = at::zeros({1});
    EXPECT_THROW(d.broadcast(t, 2, "x"), Error);
    d.barrier("still usable");  // a rejected call never reached the backend
  }));
}

namespace {
// A world of one, with or without a communicator: every collective gives back its own input.
void expect_identity_collectives(ProcessGroup& d, at::Tensor& out) {
  EXPECT_EQ(d.all_reduce(4.0, Reduce::Sum, "x"), 4.0);
  out = at::empty({2});
  d.all_gather_into_tensor(out, at::tensor({1.f, 2.f}), "x");
  EXPECT_TRUE(out.equal(at::tensor({1.f, 2.f})));
}
}  // namespace

TEST(ProcessGroup, WorldOfOneRunsNoCollectives) {
  auto d = ProcessGroup::create(WorldInfo{}, c10::Device(c10::kCPU), fast_options());
  EXPECT_EQ(d->world_size(), 1);
  EXPECT_TRUE(d->is_main());
  EXPECT_EQ(d->backend_name(), "local");
  EXPECT_EQ(d->backend(), nullptr);
  at::Tensor out;
  expect_identity_collectives(*d, out);
  d->reduce_scatter_tensor(out, at::tensor({3.f, 4.f}), "x");
  EXPECT_TRUE(out.equal(at::tensor({3.f, 4.f})));
  EXPECT_EQ(d->all_gather_bytes("abc", "x"), std::vector<std::string>{"abc"});
  auto t = at::tensor({5.f});
  d->broadcast(t, 0, "x");
  d->barrier("x");
  EXPECT_TRUE(t.equal(at::tensor({5.f})));
  EXPECT_EQ(d->collectives(), 0);
  // The same checks as a real group: a mistake is an error at any world size.
  auto bad = at::empty({3});
  EXPECT_THROW(d->all_gather_into_tensor(bad, at::zeros({2}), "x"), Error);
}

// Named explicitly, a backend is created even for one process, and its collectives really run.
TEST(ProcessGroup, WorldOfOneWithANamedBackendCreatesIt) {
  ProcessGroupOptions o = fast_options();
  o.backend = Backend::Gloo;
  auto d = ProcessGroup::create(WorldInfo{}, c10::Device(c10::kCPU), o);
  EXPECT_EQ(d->backend_name(), "gloo");
  ASSERT_NE(d->backend(), nullptr);
  at::Tensor out;
  expect_identity_collectives(*d, out);
  EXPECT_GT(d->collectives(), 0);
}

TEST(ProcessGroup, StuckPeerTimesOutWithANamedError) {
  ProcessGroupOptions opts = fast_options();
  opts.timeout = 2s;
  std::promise<void> rank0_done;
  auto done = rank0_done.get_future().share();
  double took = 0;
  std::string later;
  auto errors = run_ranks(
      2,
      [&](ProcessGroup& d) {
        if (d.rank() == 1) {  // alive, but never joins the collective
          done.wait_for(30s);
          return;
        }
        auto t0 = std::chrono::steady_clock::now();
        try {
          auto t = at::ones({8});
          d.all_reduce(t, Reduce::Sum, "grad_norm");
        } catch (...) {
          took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          try {
            d.barrier("after");
          } catch (const Error& e) {
            later = e.what();
          }
          rank0_done.set_value();
          throw;
        }
        rank0_done.set_value();
      },
      opts);
  EXPECT_EQ(errors[1], "");
  EXPECT_NE(errors[0].find("all_reduce of 'grad_norm' on rank 0 of 2 timed out after 2 s"), std::string::npos)
      << errors[0];
  EXPECT_GE(took, 1.5);
  EXPECT_LT(took, 7.0);
  EXPECT_NE(later.find("barrier of 'after' on rank 0 of 2: the process group already failed"), std::string::npos)
      << later;
}

TEST(ProcessGroup, MissingRankIsNamedAtJoin) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  ProcessGroupOptions opts = fast_options();
  opts.connect_timeout = 1s;
  auto t0 = std::chrono::steady_clock::now();
  try {
    ProcessGroup d(store, 0, 3, c10::Device(c10::kCPU), opts);
    FAIL() << "joined a world of 3 alone";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0 of 3: ranks 1, 2 did not join within 1 s"), std::string::npos)
        << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

TEST(ProcessGroup, BackendChoiceIsChecked) {
  ProcessGroupOptions opts = fast_options();
  EXPECT_FALSE(parse_enum<Backend>("mpi").has_value());  // dist.backend: mpi fails as the config loads
  opts.backend = Backend::Nccl;
  try {
    ProcessGroup d(c10::make_intrusive<c10d::HashStore>(), 0, 1, c10::Device(c10::kCPU), opts);
    FAIL() << "nccl on a CPU device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nccl"), std::string::npos) << e.what();
  }
}
