#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "agenttune/readers/dataset.h"
#include "agenttune/util/log.h"
#include "agenttune/util/strings.h"
#include "reader_internal.h"

namespace agenttune {

using readers::Where;
namespace fs = std::filesystem;

namespace {


// Folders stand for their *.json / *.jsonl / *.parquet files (parquet so it is refused loudly
// rather than skipped), in name order so the record order is reproducible.
std::vector<fs::path> expand(const DatasetSpec& spec) {
  if (spec.paths.empty()) fail("dataset '{}': no paths given", spec.name);
  std::vector<fs::path> files;
  for (const auto& p : spec.paths) {
    if (!fs::is_directory(p)) {
      files.push_back(p);
      continue;
    }
    std::vector<fs::path> found;
    for (const auto& e : fs::directory_iterator(p)) {
      auto ext = e.path().extension().string();
      if (e.is_regular_file() && (ext == ".json" || ext == ".jsonl" || ext == ".parquet"))
        found.push_back(e.path());
    }
    if (found.empty())
      fail("dataset '{}': {} holds no .json or .jsonl files", spec.name, p.string());
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

nlohmann::json parse_record(std::string_view text, const Where& where, bool array_file) {
  std::string fixed;
  bool bad_utf8 = readers::utf8_error_offset(text) != std::string_view::npos;
  if (bad_utf8) {
    fixed = readers::replace_bad_utf8(text);
    text = fixed;
  }
  nlohmann::json rec;
  try {
    rec = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // A pretty-printed object file starts with '{' too, and then reads as broken JSON Lines.
    bool cut = std::string_view(e.what()).find("end of input") != std::string_view::npos;
    readers::record_issue(
        "malformed_json",
        where.record_msg(
            fmt::format("malformed JSON: {}{}", e.what(),
                        cut && !array_file ? " (JSON Lines need one whole record per line)" : "")));
  }
  if (bad_utf8) {
    auto path = readers::find_marker(rec);
    if (!path.empty() && path[0] == '.') path.erase(0, 1);
    readers::record_issue("invalid_utf8", where.field_msg(path, "invalid UTF-8"));
  }
  return rec;
}

// The record again with its key order kept, for the fields templates print with `tojson`; only
// records with such fields pay for it. parse_record has checked the text (JSON, valid UTF-8).
nlohmann::ordered_json parse_ordered(std::string_view text) { return nlohmann::ordered_json::parse(text); }

// `detected_from`: the record the file's format was detected from, or -1 when it was configured.
[[noreturn]] void refuse_other_format(const Where& where, const readers::Telltale& t,
                                      DatasetFormat used, int64_t detected_from) {
  std::string how = detected_from < 0 ? "as configured"
                                      : fmt::format("as detected from record {}", detected_from);
  fail("{}",
       where.field_msg(t.field, fmt::format("looks like {} ({}), but the file is read as {} ({}): "
                                            "use format: {}",
                                            readers::schema_title(t.format), t.what,
                                            format_name(used), how, format_name(t.format))));
}

// Reads one file into `out`; returns how many records it held.
int64_t read_file(const fs::path& file, const DatasetSpec& spec, std::vector<Conversation>& out,
                  ReadReport& report) {
  readers::RecordSource source(file);
  DatasetFormat format = spec.format;
  const readers::Schema* schema =
      format == DatasetFormat::Auto ? nullptr : &readers::schema_for(format);
  const auto& policies = spec.policies;
  readers::RecordSource::Item item;
  int64_t kept_before = static_cast<int64_t>(out.size()), records = 0;
  std::string first_problem;
  int64_t detected_from = -1;
  while (source.next(item)) {
    ++records;
    ++report.records;
    Where where{file.string(), item.index, item.line};
    try {
      auto rec = parse_record(item.text, where, source.is_array());
      if (!schema) {
        format = detect_format(rec);
        if (format == DatasetFormat::Auto)
          fail("{}; set the dataset's format explicitly",
               where.record_msg(
                   "cannot tell the format from its keys (expected one of conversations, "
                   "conversation, messages)"));
        schema = &readers::schema_for(format);
        detected_from = item.index;
        log::info("dataset '{}': {} read as {}", spec.name, file.string(), format_name(format));
      }
      if (auto t = readers::find_telltale(rec, *schema))
        refuse_other_format(where, *t, format, detected_from);
      auto raw = readers::read_record(rec, *schema, where);
      if (format == DatasetFormat::OpenAI && readers::has_tool_fields(rec))
        readers::read_tool_fields(parse_ordered(item.text), where, raw);
      auto c = readers::normalize(std::move(raw), *schema, policies, where, report);
      if (!c) continue;
      if (format == DatasetFormat::ToolBench && policies.toolbench_last_assistant_only)
        readers::train_last_assistant_only(*c);
      if (c->id.empty()) c->id = fmt::format("{}#{}", file.stem().string(), item.index);
      c->source = spec.name;
      c->file = file.string();
      c->record = item.index;
      out.push_back(std::move(*c));
      ++report.kept;
    } catch (const readers::RecordIssue& e) {
      if (policies.bad_record == OnProblem::Error)
        throw Error(std::string(e.what()) + "; set bad records to drop to skip such records");
      ++report.dropped_records[e.reason];
      report.note(std::string(e.what()) + " (record dropped)");
      if (first_problem.empty()) first_problem = e.what();
    }
  }
  report.files.emplace_back(file.string(), format);
  if (records == 0) fail("{}: no records", file.string());
  if (static_cast<int64_t>(out.size()) == kept_before)
    fail("{}: all {} records were dropped{}", file.string(), records,
         first_problem.empty() ? "" : "; the first: " + first_problem);
  return records;
}

}  // namespace

const char* format_name(DatasetFormat f) {
  for (const auto& [v, name] : EnumNames<DatasetFormat>::values)
    if (v == f) return name.data();  // the table's literals are NUL-terminated
  return "?";
}

DatasetFormat parse_format(std::string_view name) {
  if (auto f = parse_enum<DatasetFormat>(name)) return *f;
  std::vector<std::string> names;
  for (const auto& [v, n] : EnumNames<DatasetFormat>::values) names.emplace_back(n);
  auto near = nearest(name, names);
  fail("unknown dataset format '{}'{} (valid: {})", name,
       near.empty() ? "" : fmt::format(", did you mean '{}'?", near), fmt::join(names, ", "));
}

DatasetFormat detect_format(const nlohmann::json& rec) {
  if (!rec.is_object()) return DatasetFormat::Auto;
  if (rec.contains("conversation")) return DatasetFormat::AgentFlan;
  if (rec.contains("messages")) return DatasetFormat::OpenAI;
  auto turns = rec.find("conversations");
  if (turns == rec.end()) return DatasetFormat::Auto;
  if (!turns->is_array()) return DatasetFormat::ShareGPT;  // read_record names the type error
  if (readers::agentinstruct_telltale(rec)) return DatasetFormat::AgentInstruct;
  // ToolBench's SFT ids are "Step N: <query>"; step 1 has no function turn yet, and
  // "user"/"assistant" alone also occur in ShareGPT variants, so the id decides as well.
  auto id = rec.find("id");
  bool step_id = id != rec.end() && id->is_string() && id->get<std::string>().starts_with("Step ");
  return step_id || readers::toolbench_telltale(rec) ? DatasetFormat::ToolBench
                                                     : DatasetFormat::ShareGPT;
}

std::vector<Conversation> read_dataset(const DatasetSpec& spec, ReadReport& report) {
  std::vector<Conversation> out;
  for (const auto& file : expand(spec)) read_file(file, spec, out, report);
  return out;
}

}  // namespace agenttune
