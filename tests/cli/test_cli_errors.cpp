// Bad input through the real command line: each case exits non-zero with one clear message that
// names the file and the tensor or key, and never crashes (exit 2 = a reported agenttune error).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "agenttune/io/safetensors.h"
#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

std::string bin() { return testing::agenttune_bin(); }

using testing::agenttune;
using testing::Run;

void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

using testing::expect_clean_error;
using testing::kTinyYaml;

fs::path make_model(const fs::path& dir) { return testing::make_tiny_model(dir); }

std::string gen(const fs::path& m) { return "generate --model " + m.string() + " --prompt-ids 1,5,9 --max-new-tokens 2"; }

TEST(CliErrors, ValidModelGenerates) {
  auto m = make_model(testing::scratch_dir());
  auto r = agenttune(gen(m) + " --json");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("\"new_ids\""), std::string::npos) << r.out;
}

TEST(CliErrors, MissingConfigJson) {
  auto m = make_model(testing::scratch_dir());
  fs::remove(m / "config.json");
  expect_clean_error(agenttune(gen(m)), {"config.json", "not found"});
}

TEST(CliErrors, MalformedConfigJson) {
  auto m = make_model(testing::scratch_dir());
  write(m / "config.json", "{\"hidden_size\": 32,, }");
  expect_clean_error(agenttune(gen(m)), {"config.json", "malformed JSON"});
}

TEST(CliErrors, ConfigJsonWithWrongType) {
  auto m = make_model(testing::scratch_dir());
  write(m / "config.json", R"({"vocab_size": 300, "hidden_size": "32", "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4})");
  expect_clean_error(agenttune(gen(m)), {"config.json", "hidden_size", "expected an integer"});
}

TEST(CliErrors, TruncatedSafetensors) {
  auto m = make_model(testing::scratch_dir());
  auto f = m / "model.safetensors";
  fs::resize_file(f, fs::file_size(f) - 100);
  expect_clean_error(agenttune(gen(m)), {"model.safetensors", "tensor '", "truncated"});
}

TEST(CliErrors, MalformedSafetensorsHeader) {
  auto m = make_model(testing::scratch_dir());
  auto f = m / "model.safetensors";
  std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(8);
  io.write("#!", 2);  // the JSON header now starts with garbage
  io.close();
  expect_clean_error(agenttune(gen(m)), {"model.safetensors", "header"});
}

// Rewrites the weights with `edit` applied (drop a tensor, change one), keeping the rest.
template <typename Edit>
void rewrite_weights(const fs::path& m, Edit edit) {
  auto file = SafetensorsFile::open(m / "model.safetensors");
  NamedTensors kept;
  for (const auto& e : file.entries()) {
    auto t = file.tensor(e.name).clone();
    if (edit(e.name, t)) kept.emplace_back(e.name, t);
  }
  write_safetensors(m / "model.safetensors", kept);
}

TEST(CliErrors, MissingTensor) {
  auto m = make_model(testing::scratch_dir());
  rewrite_weights(m, [](const std::string& n, at::Tensor&) { return n != "model.layers.1.mlp.up_proj.weight"; });
  expect_clean_error(agenttune(gen(m)), {m.string(), "model.layers.1.mlp.up_proj.weight", "missing", "[64, 32]"});
}

TEST(CliErrors, ShapeDisagreesWithConfig) {
  auto m = make_model(testing::scratch_dir());
  rewrite_weights(m, [](const std::string& n, at::Tensor& t) {
    if (n == "model.layers.0.self_attn.k_proj.weight") t = at::zeros({8, 32});
    return true;
  });
  expect_clean_error(agenttune(gen(m)), {"model.safetensors", "model.layers.0.self_attn.k_proj.weight", "[8, 32]", "[16, 32]"});
}

TEST(CliErrors, UnsupportedDtype) {
  auto m = make_model(testing::scratch_dir());
  rewrite_weights(m, [](const std::string& n, at::Tensor& t) {
    if (n == "model.norm.weight") t = t.to(at::kDouble);
    return true;
  });
  expect_clean_error(agenttune(gen(m)), {"model.safetensors", "model.norm.weight", "F64"});
}

TEST(CliErrors, MisspeltYamlKeySuggestsTheRightOne) {
  auto dir = testing::scratch_dir();
  std::string yaml = kTinyYaml;
  yaml.replace(yaml.find("hidden_size"), 11, "hiden_size");
  write(dir / "bad.yaml", yaml);
  expect_clean_error(agenttune("init --config " + (dir / "bad.yaml").string() + " --out " + (dir / "m").string()),
                     {"bad.yaml", "hiden_size", "did you mean 'hidden_size'"});
  EXPECT_FALSE(fs::exists(dir / "m" / "config.json"));
}

TEST(CliErrors, BadSetOverride) {
  auto dir = testing::scratch_dir();
  write(dir / "tiny.yaml", kTinyYaml);
  expect_clean_error(agenttune("init --config " + (dir / "tiny.yaml").string() + " --out " + (dir / "m").string() +
                               " --set model.num_layers=3"),
                     {"tiny.yaml", "num_layers", "did you mean 'num_hidden_layers'"});
}

TEST(CliErrors, NoWeightsInFolder) {
  auto m = make_model(testing::scratch_dir());
  fs::remove(m / "model.safetensors");
  expect_clean_error(agenttune(gen(m)), {m.string(), "no weights found"});
}

}  // namespace
}  // namespace agenttune
