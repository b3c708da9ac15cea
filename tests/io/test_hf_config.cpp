// config.json sanity when a model folder is loaded (issue 14): a head size that is not positive,
// a rope_theta that is not a positive number, a rope_scaling of an unknown form or a key of the
// wrong type are one error naming the file and the key, never a raw JSON exception; and the
// model's positions bound data.seq_len, stretched only by linear RoPE scaling.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "agenttune/io/hf_config.h"
#include "agenttune/util/error.h"

namespace agenttune {
namespace {

using nlohmann::json;

json tiny() {
  return json{{"vocab_size", 300}, {"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2},
              {"num_attention_heads", 4}, {"max_position_embeddings", 128}};
}

std::string error_of(const json& j) {
  try {
    llama_config_from_json(j, "m/config.json");
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not an agenttune::Error: ") + e.what();
  }
  return "(no error)";
}

TEST(HfConfig, BadShapesAndRopeFormsNameTheFileAndKey) {
  const std::vector<std::pair<std::pair<std::string, json>, std::string>> cases = {
      {{"head_dim", -8}, "m/config.json: 'head_dim' must be positive"},
      {{"hidden_size", 30}, "m/config.json: hidden_size 30 is not divisible by num_attention_heads 4"},
      {{"rope_theta", 0}, "m/config.json: rope_theta must be a positive number, got 0"},
      {{"rope_theta", -1.5}, "m/config.json: rope_theta must be a positive number, got -1.5"},
      {{"rope_theta", "big"}, "m/config.json: key 'rope_theta' has the wrong type: expected a number"},
      {{"rope_scaling", "linear"}, "m/config.json: key 'rope_scaling' must be an object"},
      {{"rope_scaling", json{{"type", 4}}}, "m/config.json (rope_scaling): key 'type' has the wrong type"},
      {{"rope_scaling", json{{"type", "yarn"}, {"factor", 4}}},
       "m/config.json: rope_scaling: rope scaling type 'yarn' is not supported (supported: default, linear, llama3)"},
      {{"rope_parameters", json{{"rope_type", "dynamic"}}}, "m/config.json: rope_parameters: rope scaling type 'dynamic'"},
      {{"rope_scaling", json{{"type", "linear"}}}, "m/config.json (rope_scaling): required key 'factor' is missing"},
      {{"rope_scaling", json{{"type", "linear"}, {"factor", 0.5}}}, "rope_scaling.factor must be >= 1, got 0.5"},
      {{"model_type", 7}, "m/config.json: key 'model_type' has the wrong type: expected a string, got 7"},
      {{"hidden_act", json::array()}, "m/config.json: key 'hidden_act' has the wrong type"},
      {{"attention_bias", "no"}, "m/config.json: key 'attention_bias' has the wrong type: expected a boolean"},
  };
  for (const auto& [change, expected] : cases) {
    json j = tiny();
    j[change.first] = change.second;
    const std::string msg = error_of(j);
    EXPECT_NE(msg.find(expected), std::string::npos) << change.first << " = " << change.second.dump() << ": " << msg;
  }
  // The known forms load: none, null, default, linear in either spelling.
  for (const json& scaling : {json(nullptr), json{{"rope_type", "default"}}, json{{"type", "linear"}, {"factor", 2.0}}}) {
    json j = tiny();
    j["rope_scaling"] = scaling;
    EXPECT_EQ(error_of(j), "(no error)") << scaling.dump();
  }
}

// Llama-3.1-Instruct's eos_token_id is a list: every id is kept in order and written back as the
// same list (one id stays one id); an empty list or a non-integer entry names the key.
TEST(HfConfig, EosTokenIdListIsReadKeptAndWrittenBack) {
  json j = tiny();
  j["eos_token_id"] = {128001, 128008, 128009};
  const auto c = llama_config_from_json(j, "m/config.json");
  EXPECT_EQ(c.eos_token_id, 128001);
  EXPECT_EQ(c.eos_token_ids(), (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(llama_config_to_json(c).at("eos_token_id"), j["eos_token_id"]);
  j["eos_token_id"] = 7;
  EXPECT_EQ(llama_config_to_json(llama_config_from_json(j, "m/config.json")).at("eos_token_id"), json(7));
  j["eos_token_id"] = json::array();
  EXPECT_NE(error_of(j).find("m/config.json: key 'eos_token_id' is an empty list"), std::string::npos) << error_of(j);
  j["eos_token_id"] = {2, "x"};
  EXPECT_NE(error_of(j).find("m/config.json: key 'eos_token_id' must hold integers, got \"x\""), std::string::npos)
      << error_of(j);
}

TEST(HfConfig, SeqLenIsBoundByThePositionsAndLinearScaling) {
  LlamaConfig c = llama_config_from_json(tiny(), "m/config.json");
  c.check_seq_len(128, "m/config.json");
  try {
    c.check_seq_len(129, "m/config.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m/config.json: data.seq_len 129 is longer than the model's 128 positions"),
              std::string::npos)
        << e.what();
  }
  json j = tiny();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  c = llama_config_from_json(j, "m/config.json");
  EXPECT_EQ(c.max_positions(), 512);
  c.check_seq_len(512, "m/config.json");
  EXPECT_THROW(c.check_seq_len(513, "m/config.json"), Error);
}

// The config.json agenttune writes spells the rope settings twice (rope_theta + rope_scaling for
// transformers 4, rope_parameters for 5). Only the first spelling found used to be read, so editing
// the other was accepted and ignored: rope_theta 0 beside rope_parameters' 10000 loaded as 10000,
// and a rope_scaling of factor 0 or of type yarn beside rope_parameters loaded too. Every spelling
// is now checked, and two that disagree are refused naming both keys.
TEST(HfConfig, EverySpellingOfTheRopeSettingsIsCheckedAndTheyMustAgree) {
  const json written = llama_config_to_json(llama_config_from_json(tiny(), "m/config.json"));
  ASSERT_TRUE(written.contains("rope_parameters"));
  const std::vector<std::pair<std::pair<std::string, json>, std::string>> cases = {
      {{"rope_theta", 0}, "m/config.json: rope_theta must be a positive number, got 0"},
      {{"rope_theta", 500000.0},
       "m/config.json: rope_theta is 500000 but rope_parameters.rope_theta is 10000 (transformers 4 reads the first"},
      {{"rope_scaling", json{{"type", "linear"}, {"factor", 0}}}, "m/config.json: rope_scaling.factor must be >= 1, got 0"},
      {{"rope_scaling", json{{"type", "yarn"}, {"factor", 4}}}, "m/config.json: rope_scaling: rope scaling type 'yarn'"},
      {{"rope_scaling", json{{"type", "linear"}, {"factor", 2.0}}},
       "m/config.json: rope_scaling has factor 2 but rope_parameters has factor 1"},
      {{"rope_parameters", json{{"rope_type", "default"}, {"rope_theta", -1}}},
       "m/config.json: rope_parameters.rope_theta must be a positive number, got -1"},
      {{"rope_parameters", json{{"rope_type", "linear"}, {"factor", -2}}},
       "m/config.json: rope_parameters.factor must be >= 1, got -2"},
  };
  for (const auto& [change, expected] : cases) {
    json j = written;
    j[change.first] = change.second;
    const std::string msg = error_of(j);
    EXPECT_NE(msg.find(expected), std::string::npos) << change.first << " = " << change.second.dump() << ": " << msg;
  }
  // Both spellings saying the same thing load, scaled or not.
  EXPECT_EQ(error_of(written), "(no error)");
  json scaled = tiny();
  scaled["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  const LlamaConfig c = llama_config_from_json(llama_config_to_json(llama_config_from_json(scaled, "a")), "b");
  EXPECT_EQ(c.rope_scaling_factor, 2.0);
  EXPECT_EQ(c.rope_theta, 10000.0);
}

}  // namespace
}  // namespace agenttune
