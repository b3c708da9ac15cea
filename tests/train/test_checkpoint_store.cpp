#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "agenttune/io/file_digest.h"
#include "agenttune/train/checkpoint_store.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "test_paths.h"

namespace agenttune {
namespace {

using namespace agenttune::testing;
namespace fs = std::filesystem;
using nlohmann::json;

// Values that depend on step and rank, filled through raw pointers: the fork test's child must
// run no ATen kernels (a thread pool inherited across fork() can deadlock).
NamedTensors tensors_for(int64_t step, int rank = 0, int64_t n = 64 * 1024) {
  at::Tensor w = at::empty({n / 64, 64}, at::kFloat);
  float* pw = w.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) pw[i] = static_cast<float>(step) * 0.5f + static_cast<float>(i) + rank;
  at::Tensor b = at::empty({5}, at::kBFloat16);
  for (int64_t i = 0; i < 5; ++i) b.data_ptr<at::BFloat16>()[i] = at::BFloat16(static_cast<float>(step - i));
  at::Tensor c = at::empty({2}, at::kLong);
  c.data_ptr<int64_t>()[0] = step;
  c.data_ptr<int64_t>()[1] = -step * 1000 - rank;
  return {{"model.w", w}, {"model.b", b}, {"optim.count", c}};
}

CheckpointWrite write_for(int64_t step, int rank = 0, int world = 1) {
  return {step, rank, world, tensors_for(step, rank), json{{"tokens", step * 1000}}};
}

bool bytes_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

// The folder opens, its meta and every rank's tensors match what write_for() saved for its step.
void expect_valid(const fs::path& dir, int world = 1) {
  LoadedCheckpoint ck = open_checkpoint(dir);
  EXPECT_EQ(dir.filename().string(), CheckpointStore::folder_name(ck.step));
  EXPECT_EQ(ck.world_size, world);
  EXPECT_EQ(ck.meta["tokens"].get<int64_t>(), ck.step * 1000) << dir;
  for (int r = 0; r < world; ++r) {
    auto src = open_rank_tensors(dir, r);
    for (const auto& [name, t] : tensors_for(ck.step, r))
      EXPECT_TRUE(bytes_equal(src->get(name), t)) << dir << " rank " << r << " " << name;
  }
}

std::set<std::string> entries(const fs::path& root) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(root)) out.insert(e.path().filename().string());
  return out;
}

template <typename F>
void expect_error(F f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected agenttune::Error";
  } catch (const Error& e) {
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "lacks '" << n << "': " << e.what();
  }
}

TEST(CheckpointStore, SaveLoadRoundTripIsBitExact) {
  auto root = scratch_dir() / "ckpt";
  CheckpointStore store(root, 3);
  EXPECT_FALSE(store.latest().has_value());

  at::manual_seed(7);
  at::Tensor special = at::tensor({0.0f, -0.0f, NAN, -INFINITY, 1e-45f, 3.4e38f});
  NamedTensors t = {{"w.f32", at::randn({17, 9})},
                    {"w.bf16", at::randn({4, 6}).to(at::kBFloat16)},
                    {"w.f16", at::randn({3}).to(at::kHalf)},
                    {"w.f64", at::randn({2, 2}, at::kDouble)},
                    {"w.transposed", at::randn({5, 3}).t()},
                    {"special", special},
                    {"rng.state", at::randint(0, 256, {5056}, at::kByte)},
                    {"step.i64", at::tensor({int64_t{1} << 40, int64_t{-3}})},
                    {"mask", at::randn({9}) > 0},
                    {"empty", at::empty({0, 4})}};
  json meta = {{"tokens", 123456789012}, {"data", {{"shard", 3}, {"offset", 77}}}, {"rng", "abc"}};
  fs::path dir = store.save({42, 0, 1, t, meta});

  EXPECT_EQ(dir, root / "step_00000042");
  EXPECT_EQ(entries(dir), (std::set<std::string>{"COMPLETE", "meta.json", "rank_00000.safetensors"}));
  EXPECT_EQ(entries(root), (std::set<std::string>{"latest", "step_00000042"}));
  EXPECT_EQ(read_text_file(root / "latest"), "step_00000042\n");
  EXPECT_EQ(store.latest(), dir);

  LoadedCheckpoint ck = open_checkpoint(dir);
  EXPECT_EQ(ck.step, 42);
  EXPECT_EQ(ck.world_size, 1);
  EXPECT_EQ(ck.meta["tokens"].get<int64_t>(), 123456789012);
  EXPECT_EQ(ck.meta["data"], meta["data"]);
  auto src = open_rank_tensors(dir, 0);
  ASSERT_EQ(src->names().size(), t.size());
  for (const auto& [name, tensor] : t) EXPECT_TRUE(bytes_equal(src->get(name), tensor)) << name;
  EXPECT_EQ(src->get("special").view(at::kInt)[1].item<int32_t>(), INT32_MIN);  // -0.0 kept

  expect_error([&] { open_rank_tensors(dir, 1); }, {"rank_00001.safetensors"});
  expect_error([&] { src->get("nope"); }, {"rank_00000.safetensors", "nope"});
  expect_error([&] { store.save({43, 0, 2, t, meta}); }, {"stage()"});
}

TEST(CheckpointStore, KeepLastPrunesOldestAndResaveReplaces) {
  auto root = scratch_dir();
  CheckpointStore store(root / "a", 2);
  for (int64_t s = 1; s <= 5; ++s) store.save(write_for(s));
  EXPECT_EQ(entries(root / "a"), (std::set<std::string>{"latest", "step_00000004", "step_00000005"}));
  EXPECT_EQ(store.latest(), root / "a" / "step_00000005");

  // A run resumed from step 3 reaching step 4 again replaces it; step 5 belongs to the abandoned
  // timeline, so it moves out of resume's reach (kept for the user) and latest is step 4 again.
  CheckpointWrite again = write_for(4);
  again.meta["attempt"] = 2;
  store.save(again);
  EXPECT_EQ(store.latest(), root / "a" / "step_00000004");
  EXPECT_EQ(open_checkpoint(root / "a" / "step_00000004").meta["attempt"], 2);
  EXPECT_EQ(entries(root / "a"), (std::set<std::string>{"latest", "step_00000004", "abandoned_step_00000005"}));
  expect_valid(root / "a" / "step_00000004");

  CheckpointStore all(root / "b", 0);
  for (int64_t s = 1; s <= 4; ++s) all.save(write_for(s * 100));
  EXPECT_EQ(entries(root / "b").size(), 5u);  // 4 checkpoints + latest
}

TEST(CheckpointStore, InterruptedSavesFallBackToPreviousComplete) {
  auto root = scratch_dir();
  CheckpointStore store(root, 5);
  store.save(write_for(1));
  fs::path good = store.save(write_for(2));

  // What kills can leave: a temp folder with a torn file, a step folder without COMPLETE, and a
  // `latest` naming a folder that is incomplete, missing, or outside the store.
  fs::create_directories(root / ".tmp_step_00000003_99999");
  std::ofstream(root / ".tmp_step_00000003_99999" / "rank_00000.safetensors") << "torn";
  fs::create_directories(root / "step_00000004");
  fs::copy_file(good / "rank_00000.safetensors", root / "step_00000004" / "rank_00000.safetensors");
  fs::copy_file(good / "meta.json", root / "step_00000004" / "meta.json");
  std::ofstream(root / "latest.tmp.12345") << "step_0000";
  for (const char* pointer : {"step_00000004", "step_00000009", "../../etc", ""}) {
    write_file_atomic(root / "latest", std::string(pointer) + "\n");
    EXPECT_EQ(store.latest(), good) << pointer;
  }
  fs::remove(root / "latest");
  EXPECT_EQ(store.latest(), good);

  expect_error([&] { open_checkpoint(root / "step_00000004"); }, {"step_00000004", "COMPLETE"});
  expect_error([&] { open_checkpoint(root / "step_00000009"); }, {"step_00000009", "not found"});
  fs::copy(good, root / "broken");
  write_file_atomic(root / "broken" / "meta.json", "{\"step\": 2,");
  expect_error([&] { open_checkpoint(root / "broken"); }, {"broken", "meta.json"});
  fs::remove(root / "broken" / "rank_00000.safetensors");
  write_file_atomic(root / "broken" / "meta.json", R"({"step": 2, "world_size": 1})");
  write_file_atomic(root / "broken" / "COMPLETE", "2\n");  // an older marker, without digests
  expect_error([&] { open_checkpoint(root / "broken"); }, {"broken", "rank_00000.safetensors"});
  fs::remove_all(root / "broken");

  // The next save clears the leftovers older than itself.
  store.save(write_for(6));
  EXPECT_EQ(entries(root),
            (std::set<std::string>{"latest", "step_00000001", "step_00000002", "step_00000006"}));
  expect_valid(*store.latest());
}

TEST(CheckpointStore, TwoRanksStageThenCommit) {
  auto root = scratch_dir() / "ckpt";
  // One store object per rank, as separate processes sharing the filesystem would have.
  CheckpointStore rank0(root, 3), rank1(root, 3);
  auto stage_both = [&](int64_t step) {
    std::thread t1([&] { rank1.stage(write_for(step, 1, 2)); });
    fs::path f0 = rank0.stage(write_for(step, 0, 2));
    t1.join();
    EXPECT_EQ(f0, root / fmt::format(".tmp_step_{:08d}", step) / "rank_00000.safetensors");
  };
  stage_both(10);
  EXPECT_FALSE(rank0.latest().has_value());  // staged is not yet a checkpoint
  EXPECT_EQ(rank0.commit(10, {{"tokens", 10000}}, 2), root / "step_00000010");
  expect_valid(root / "step_00000010", 2);
  EXPECT_EQ(rank1.latest(), root / "step_00000010");

  // Commit refuses while a rank has not staged, latest stays put, and the failed save leaves no
  // temporary folder: the ranks stage again.
  rank0.stage(write_for(20, 0, 2));
  expect_error([&] { rank0.commit(20, {{"tokens", 20000}}, 2); }, {"rank_00001.safetensors", "stage"});
  EXPECT_EQ(rank0.latest(), root / "step_00000010");
  EXPECT_FALSE(fs::exists(root / ".tmp_step_00000020"));
  stage_both(20);
  rank0.commit(20, {{"tokens", 20000}}, 2);
  expect_valid(root / "step_00000020", 2);
  EXPECT_EQ(entries(root / "step_00000020"),
            (std::set<std::string>{"COMPLETE", "meta.json", "rank_00000.safetensors",
                                   "rank_00001.safetensors"}));

  // A leftover staged under another world size is refused, not committed.
  CheckpointStore(root, 3).stage(write_for(30, 1, 3));
  rank0.stage(write_for(30, 0, 2));
  expect_error([&] { rank0.commit(30, {}, 2); }, {"rank_00001.safetensors", "world size 3"});
  expect_error([&] { rank0.commit(40, {}, 2); }, {"nothing staged for step 40"});
  expect_error([&] { rank0.stage(write_for(40, 2, 2)); }, {"rank 2 of world size 2"});
}

// The real thing: a child saving in a loop is SIGKILLed at random moments; after every kill the
// newest checkpoint must open and load exactly, and so must every folder marked complete.
TEST(CheckpointStore, SigkillAtRandomMomentsKeepsLatestLoadable) {
  auto root = scratch_dir() / "ckpt";
  CheckpointStore store(root, 3);
  auto t0 = std::chrono::steady_clock::now();
  store.save(write_for(1));
  // Kill within a few saves' time, however slow this machine's fsync is, so most rounds land
  // mid-save and some after a complete one.
  auto save_us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int64_t> delay_us(0, std::max<int64_t>(20000, 4 * save_us.count()));
  int64_t last = 1;
  int rounds_with_leftovers = 0, progressed = 0;
  for (int round = 0; round < 20; ++round) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      try {
        for (int64_t s = last + 1;; ++s) store.save(write_for(s));
      } catch (...) {
      }
      ::_exit(3);  // never back into gtest in the child
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child exited early: " << status;

    auto latest = store.latest();
    ASSERT_TRUE(latest.has_value()) << "round " << round;
    LoadedCheckpoint ck = open_checkpoint(*latest);
    EXPECT_GE(ck.step, last) << "round " << round;  // never goes back
    progressed += ck.step > last;
    last = ck.step;
    bool leftover = false;
    for (const auto& name : entries(root)) {
      leftover |= name.starts_with(".tmp_") || name.starts_with("latest.tmp");
      if (name.starts_with("step_") && fs::exists(root / name / "COMPLETE")) expect_valid(root / name);
    }
    rounds_with_leftovers += leftover;
  }
  EXPECT_GT(progressed, 0);
  std::cout << "kills that left a temp folder or file: " << rounds_with_leftovers
            << " of 20, rounds with progress: " << progressed << ", last step " << last << "\n";

  // A clean save afterwards leaves exactly keep_last checkpoints and no leftovers.
  store.save(write_for(last + 1));
  auto names = entries(root);
  EXPECT_EQ(names.size(), 4u);
  EXPECT_TRUE(names.count("latest") && names.count(CheckpointStore::folder_name(last + 1)));
  for (const auto& n : names) EXPECT_FALSE(n.starts_with(".tmp_") || n.starts_with("latest.tmp")) << n;
  expect_valid(*store.latest());
}

TEST(CheckpointDigest, Crc32KnownVectors) {
  EXPECT_EQ(digest_of("123456789").crc32, 0xCBF43926u);  // the CRC-32 check value (ISO-HDLC)
  EXPECT_EQ(digest_of("").crc32, 0u);
  EXPECT_EQ(digest_of("123456789").bytes, 9u);
  DigestBuilder b;  // incremental equals one shot
  b.update("12345", 5);
  b.update("6789", 4);
  EXPECT_EQ(b.result(), digest_of("123456789"));
  EXPECT_EQ(FileDigest::from_json(digest_of("123456789").to_json(), "x"), digest_of("123456789"));
  expect_error([] { FileDigest::from_json(json{{"bytes", 9}, {"crc32", "zz"}}, "COMPLETE"); }, {"COMPLETE", "crc32"});
}

// Every single-byte change to a rank file or meta.json is caught at load, naming the file.
TEST(CheckpointDigest, FlippedBytesAndEditedMetaAreNamed) {
  auto root = scratch_dir();
  CheckpointStore store(root, 2);
  fs::path dir = store.save(write_for(7));
  json complete = json::parse(read_text_file(dir / "COMPLETE"));
  EXPECT_EQ(complete["step"], 7);
  EXPECT_EQ(FileDigest::from_json(complete["files"]["rank_00000.safetensors"], "COMPLETE"),
            digest_of_file(dir / "rank_00000.safetensors"));
  EXPECT_EQ(FileDigest::from_json(complete["files"]["meta.json"], "COMPLETE"), digest_of_file(dir / "meta.json"));

  const fs::path rank = dir / "rank_00000.safetensors";
  const std::string original = read_text_file(rank);
  std::mt19937 rng(7);
  int caught = 0, tried = 0;
  for (int i = 0; i < 40; ++i, ++tried) {
    std::string bad = original;
    size_t at = i < 8 ? static_cast<size_t>(i) : rng() % bad.size();  // the header length, then anywhere
    bad[at] = static_cast<char>(bad[at] ^ (1 << (rng() % 8)));
    write_file_atomic(rank, bad);
    try {
      open_rank_tensors(dir, 0);
    } catch (const Error& e) {
      caught += std::string(e.what()).find("rank_00000.safetensors: corrupt") != std::string::npos;
    }
  }
  write_file_atomic(rank, original.substr(0, original.size() - 1));  // truncated
  expect_error([&] { open_rank_tensors(dir, 0); }, {"rank_00000.safetensors", "corrupt"});
  write_file_atomic(rank, original);
  EXPECT_EQ(caught, tried);
  std::cout << "flipped bytes caught: " << caught << " of " << tried << "\n";

  // A changed cursor in meta.json, still valid JSON, is refused too.
  std::string meta = read_text_file(dir / "meta.json");
  auto pos = meta.find("7000");
  ASSERT_NE(pos, std::string::npos);
  write_file_atomic(dir / "meta.json", meta.substr(0, pos) + "7001" + meta.substr(pos + 4));
  expect_error([&] { open_checkpoint(dir); }, {"meta.json: corrupt", "crc32"});
  write_file_atomic(dir / "meta.json", meta);
  expect_valid(dir);
}

TEST(CheckpointStore, FailedSaveLeavesNoTemporaryFolder) {
  auto root = scratch_dir();
  CheckpointStore store(root, 2);
  store.save(write_for(1));
  CheckpointWrite w = write_for(2);
  w.tensors.emplace_back("undefined", at::Tensor());
  expect_error([&] { store.save(w); }, {"undefined"});
  EXPECT_EQ(entries(root), (std::set<std::string>{"latest", "step_00000001"}));
}

TEST(CheckpointStore, NewestCompleteWinsOverAStaleLatestAndLeftoversGo) {
  auto root = scratch_dir();
  CheckpointStore store(root, 5);
  store.save(write_for(1));
  store.save(write_for(2));
  // A kill between step 2's rename and the pointer's update leaves latest one behind.
  write_file_atomic(root / "latest", "step_00000001\n");
  EXPECT_EQ(store.latest(), root / "step_00000002");
  fs::create_directories(root / ".tmp_step_00000009_1234");
  fs::create_directories(root / ".tmp_step_00000003");
  fs::create_directories(root / "step_00000005");  // no COMPLETE
  std::ofstream(root / "latest.tmp.777") << "x";
  store.remove_leftovers();
  EXPECT_EQ(entries(root), (std::set<std::string>{"latest", "step_00000001", "step_00000002"}));
}

}  // namespace
}  // namespace agenttune
