// `agenttune eval` end to end on the bundled agent data: the tiny model is trained on 2 Gloo ranks
// until it overfits the bundled AgentInstruct trajectories (with the bundled ShareGPT chats as the
// negatives, no tools offered), its in-loop eval at the last step is compared with `agenttune eval`
// on the exported checkpoint, and both with the untrained model. A second pair of runs, with and
// without Agent-FLAN's negatives, shows what the negatives do to hallucination.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <tuple>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

// `[LAUNCHER] agenttune ARGS`, which must succeed.
testing::Run ok(const std::string& args, const std::string& launcher = "") {
  testing::Run r;
  r.rc = testing::run_command(launcher + testing::agenttune_bin() + " " + args, &r.out);
  EXPECT_EQ(r.rc, 0) << args << "\n" << r.out;
  return r;
}

nlohmann::json eval_json(const fs::path& model,
                         const fs::path& config = testing::source_dir() / "configs/tiny/eval.yaml") {
  const fs::path out = model.string() + "_eval.json";
  // A subshell: only stdout goes to the file, the log (stderr) to the captured output.
  std::string log;
  const int rc = testing::run_command("(" + testing::agenttune_bin() + " eval --json --model " + model.string() +
                                          " --config " + config.string() + " > " + out.string() + ")",
                                      &log);
  EXPECT_EQ(rc, 0) << log;
  return nlohmann::json::parse(std::ifstream(out));
}

// The untrained tiny model of configs/tiny/model.yaml, at root/model.
fs::path init_tiny_model(const fs::path& root) {
  ok("init --config " + (testing::source_dir() / "configs/tiny/model.yaml").string() + " --out " +
     (root / "model").string());
  return root / "model";
}

// An SFT run of the tiny model at `init` on the prepared `sources` (name: folder), `steps` steps
// with the hot settings that let it learn the bundled records by heart; `eval_section` (a train
// config's `eval:` section), when given, runs at the last step.
fs::path write_sft_config(const fs::path& root, const std::string& run, const fs::path& init,
                          const std::vector<std::pair<std::string, fs::path>>& sources, int steps,
                          const std::string& eval_section = "") {
  const fs::path file = root / (run + ".yaml");
  std::ofstream f(file);
  f << "output_dir: " << (root / run).string() << "\n"
    << "model: {init_from: " << init.string() << "}\n"
    << "data:\n  sources:\n";
  for (const auto& [name, path] : sources) f << "    - {name: " << name << ", path: " << path.string() << "}\n";
  f << "  seq_len: 512\n  attention: document\n  tokenizer: "
    << testing::shared_fixture("llama2-tokenizer.model").string() << "\n"
    << "train: {max_steps: " << steps << ", micro_batch_size: 2, global_batch_sequences: 4, "
    << "lr: 2.0e-2, warmup_steps: 5, weight_decay: 0.0"
    << (eval_section.empty() ? "" : ", eval_interval: " + std::to_string(steps)) << "}\n"
    << "checkpoint: {interval: " << steps << ", keep_last: 1}\n"
    << "metrics: {tensorboard: false}\n"
    << "dist: {timeout_s: 60}\n"
    << eval_section;
  return file;
}

// Trains by `config` (on `launcher`'s ranks) and exports its last checkpoint to root/<out>.
fs::path train_and_export(const fs::path& root, const fs::path& config, const std::string& run, int steps,
                          const std::string& out, const std::string& launcher = "", int data_seed = -1) {
  ok("train --no-progress --config " + config.string() +
         (data_seed >= 0 ? " --set train.seed=" + std::to_string(data_seed) : std::string()),
     launcher);
  char step[32];
  std::snprintf(step, sizeof step, "step_%08d", steps);
  ok("export --dtype float32 --template agentlm --checkpoint " + (root / run / "checkpoints" / step).string() +
     " --out " + (root / out).string());
  return root / out;
}

// The share of `metric` over the agent tasks' turns (positives), pooled.
double pooled(const nlohmann::json& j, const std::string& metric) {
  double part = 0, whole = 0;
  for (const auto& t : j["tasks"]) {
    if (t["turns"].get<int64_t>() == 0 || t[metric].is_null()) continue;
    part += t[metric].get<double>() * t["turns"].get<double>();
    whole += t["turns"].get<double>();
  }
  return whole > 0 ? part / whole : -1;
}

double negatives_metric(const nlohmann::json& j, const std::string& metric) {
  for (const auto& t : j["tasks"])
    if (t["negatives"].get<int64_t>() > 0) return t[metric].get<double>();
  ADD_FAILURE() << "no negatives in " << j.dump();
  return -1;
}

// eval/* of the metrics row at `step`.
std::map<std::string, double> eval_row(const fs::path& run, int64_t step) {
  std::ifstream in(run / "metrics.jsonl");
  std::string line;
  std::map<std::string, double> out;
  while (std::getline(in, line)) {
    auto row = nlohmann::json::parse(line);
    if (row["step"].get<int64_t>() != step) continue;
    for (const auto& [k, v] : row.items())
      if (k.rfind("eval/", 0) == 0) out[k] = v.get<double>();
  }
  return out;
}

// The CLI's JSON as eval/<...> scalars, named as training writes them.
std::map<std::string, double> cli_scalars(const nlohmann::json& j) {
  std::map<std::string, double> out;
  for (const auto& t : j["tasks"])
    for (const char* m : {"format_valid", "tool_valid", "action_match", "refused", "hallucination"})
      if (!t[m].is_null()) out["eval/" + t["task"].get<std::string>() + "/" + m] = t[m].get<double>();
  for (const auto& l : j["heldout_loss"]) {
    const auto group = l["group"].get<std::string>(), name = l["name"].get<std::string>();
    out[group == "task" ? "eval/" + name + "/loss" : "eval/" + group + "_" + name + "/loss"] = l["loss"].get<double>();
  }
  return out;
}

TEST(EvalCli, OverfitModelReproducesTheBundledActionsAndInLoopEqualsTheCli) {
  if (testing::shared_fixture("llama2-tokenizer.model").empty()) GTEST_SKIP() << "no Llama-2 tokenizer fixture";
  const auto root = testing::scratch_dir();
  const auto src = testing::source_dir();
  const auto untrained = eval_json(init_tiny_model(root));

  ok("prepare --config " + (src / "configs/tiny/sft_prepare.yaml").string() + " --set datasets.0.output=" +
     (root / "ai").string() + " --set datasets.1.output=" + (root / "sg").string() +
     " --set datasets.0.upsample=1 --set datasets.1.upsample=1");
  const std::string eval_section =
      "eval:\n  template: agentlm\n  max_new_tokens: 64\n  records:\n    - {path: " +
      (src / "data/samples/agentinstruct.jsonl").string() + ", format: agentinstruct}\n    - {path: " +
      (src / "data/samples/sharegpt.json").string() + ", format: sharegpt, negative: true}\n";
  const auto config = write_sft_config(root, "run", root / "model",
                                       {{"agentinstruct", root / "ai"}, {"sharegpt", root / "sg"}}, 120, eval_section);
  train_and_export(root, config, "run", 120, "tuned", testing::torchrun(2));
  const auto tuned = eval_json(root / "tuned");

  // The overfit model reproduces the actions; the untrained one produces noise.
  EXPECT_GE(pooled(tuned, "format_valid"), 0.9) << tuned.dump(1);
  EXPECT_GE(pooled(tuned, "action_match"), 0.8) << tuned.dump(1);
  EXPECT_LE(pooled(untrained, "format_valid"), 0.1) << untrained.dump(1);
  EXPECT_EQ(pooled(untrained, "action_match"), 0.0) << untrained.dump(1);
  // Trained with plain chat replies, it calls no tool on the negatives (the untrained model's noise
  // calls none either, so its rate is the floor, 0), and no longer answers an action turn without
  // one, which the noise does.
  EXPECT_LE(negatives_metric(tuned, "hallucination"), negatives_metric(untrained, "hallucination"));
  EXPECT_LT(pooled(tuned, "refused"), pooled(untrained, "refused")) << untrained.dump(1);

  // In-loop eval on 2 ranks (each decoding its share) equals `agenttune eval` on the checkpoint.
  const auto in_loop = eval_row(root / "run", 120);
  const auto cli = cli_scalars(tuned);
  ASSERT_EQ(in_loop.size(), cli.size());
  for (const auto& [k, v] : cli) {
    ASSERT_TRUE(in_loop.count(k)) << k;
    if (k.size() > 5 && k.compare(k.size() - 5, 5, "/loss") == 0)
      EXPECT_NEAR(in_loop.at(k), v, 1e-5 * std::max(1.0, std::abs(v))) << k;
    else
      EXPECT_EQ(in_loop.at(k), v) << k;
  }
}

// Agent-FLAN's case for negative samples: agent data alone teaches a model that offered tools are
// always called, so it calls them where they do not fit; the same recipe with negatives (offered
// tools, a query they do not serve, a plain answer) keeps it from doing so. Both tiny models are
// tuned on the bundled AgentInstruct trajectories, Agent-FLAN's positives and the flight-lookup
// calls; the second also on the bundled negatives, of which prepare holds 4 out. All three models
// (the untrained one too) answer those 4 held-out negatives. A 2-layer model's greedy reply to a
// query it never saw is fragile (one data order, or another CPU's rounding, turns a call into
// noise that calls nothing), so each tuned arm is three runs with different data orders and the
// test compares the pooled rates: 12 replies per arm.
TEST(EvalCli, NegativesKeepATunedModelFromCallingToolsThatDoNotFit) {
  const auto tokenizer = testing::shared_fixture("llama2-tokenizer.model");
  if (tokenizer.empty()) GTEST_SKIP() << "no Llama-2 tokenizer fixture";
  const auto root = testing::scratch_dir();
  const auto src = testing::source_dir();
  init_tiny_model(root);

  // agentflan.jsonl without its one negative: the positives of the run without negatives.
  {
    std::ifstream in(src / "data/samples/agentflan.jsonl");
    std::ofstream out(root / "agentflan_positives.jsonl");
    for (std::string line; std::getline(in, line);)
      if (nlohmann::json::parse(line)["id"].get<std::string>().find("negative") == std::string::npos) out << line << "\n";
  }
  std::ofstream(root / "prepare.yaml")
      << "tokenizer: " << tokenizer.string() << "\ntemplate: agentlm\nmax_seq_len: 512\ndatasets:\n"
      << "  - {name: agentinstruct, paths: [" << (src / "data/samples/agentinstruct.jsonl").string()
      << "], format: agentinstruct, output: " << (root / "ai").string() << "}\n"
      << "  - {name: agentflan, paths: [" << (root / "agentflan_positives.jsonl").string()
      << "], format: agentflan, output: " << (root / "flan").string() << "}\n"
      << "  - {name: flights, paths: [" << (src / "data/samples/agentflan_flights.jsonl").string()
      << "], format: agentflan, output: " << (root / "flights").string() << "}\n"
      << "  - {name: flan_negatives, paths: [" << (src / "data/samples/agentflan_negatives.jsonl").string()
      << "], format: agentflan, output: " << (root / "neg").string() << ", holdout: 4}\n";
  ok("prepare --config " + (root / "prepare.yaml").string());
  std::ofstream(root / "eval.yaml") << "template: agentlm\nrecords: [{path: " << (root / "neg").string()
                                    << "}]\nheldout_loss: false\nmax_new_tokens: 48\n";

  // The number of held-out negatives the model called a tool on, checking there are 4.
  const auto hallucinations = [&](const fs::path& model, const std::string& name) {
    const auto j = eval_json(model, root / "eval.yaml");
    int64_t negatives = 0;
    for (const auto& t : j["tasks"]) negatives += t["negatives"].get<int64_t>();
    EXPECT_EQ(negatives, 4) << j.dump(1);
    const double rate = negatives_metric(j, "hallucination");
    std::printf("hallucination on the 4 held-out negatives, %s: %.2f\n", name.c_str(), rate);
    return std::lround(rate * 4);
  };

  constexpr int kSteps = 200;
  const std::vector<std::pair<std::string, fs::path>> agent = {
      {"agentinstruct", root / "ai"}, {"agentflan", root / "flan"}, {"flights", root / "flights"}};
  auto with_negatives = agent;
  with_negatives.emplace_back("flan_negatives", root / "neg");
  EXPECT_EQ(hallucinations(root / "model", "untrained"), 0);
  std::map<std::string, long> calls;
  const std::vector<std::tuple<std::string, std::string, std::vector<std::pair<std::string, fs::path>>>> arms = {
      {"without negatives", "without_", agent}, {"with negatives", "with_", with_negatives}};
  for (int seed = 1; seed <= 3; ++seed)
    for (const auto& [arm, prefix, sources] : arms) {
      const std::string run = prefix + std::to_string(seed);
      const auto config = write_sft_config(root, run, root / "model", sources, kSteps);
      const auto model = train_and_export(root, config, run, kSteps, run + "_model", "", seed);
      calls[arm] += hallucinations(model, arm + ", data order " + std::to_string(seed));
    }
  std::printf("pooled over 3 data orders: %ld of 12 without negatives, %ld of 12 with negatives\n",
              calls["without negatives"], calls["with negatives"]);
  EXPECT_LT(calls.at("with negatives"), calls.at("without negatives"));
}

TEST(EvalCli, ShowFailuresMarksTheDifferingSpan) {
  if (testing::shared_fixture("llama2-tokenizer.model").empty()) GTEST_SKIP() << "no Llama-2 tokenizer fixture";
  const auto root = testing::scratch_dir();
  const auto src = testing::source_dir();
  init_tiny_model(root);
  auto r = ok("eval --show-failures 2 --set max_new_tokens=8 --set tasks=[os] --model " + (root / "model").string() +
              " --config " + (src / "configs/tiny/eval.yaml").string());
  // The table, then two failures of the untrained model with the gold action marked.
  EXPECT_NE(r.out.find("format-valid %"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("-- os_12 turn 3 (os):"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("gold action:  ⟦bash: find /srv/uploads -type f -size +1M | wc -l⟧"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("last turn:    How many regular files larger than 1 MB"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("webshop"), std::string::npos) << "tasks: [os] still scored other tasks:\n" << r.out;
  // The JSON carries failures, not replies: --show-replies there would do nothing, so it is refused.
  auto both = testing::agenttune("eval --json --show-replies 1 --model " + (root / "model").string() + " --config " +
                                 (src / "configs/tiny/eval.yaml").string());
  EXPECT_NE(both.rc, 0) << both.out;
  EXPECT_NE(both.out.find("--json excludes --show-replies"), std::string::npos) << both.out;
}

}  // namespace
}  // namespace agenttune
