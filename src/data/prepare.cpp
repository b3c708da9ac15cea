// The prepare pipeline: one reader thread cuts the inputs into 256 KiB batches of records, N workers
// parse and tokenize batches independently, and the calling thread writes results strictly in batch
// order. The order is fixed by the reader alone, so the shards are byte-identical for any thread
// count; at most `window` batches are in flight, so memory does not grow with the corpus.
#include "agenttune/data/prepare.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/log.h"
#include "agenttune/util/strings.h"
#include "compressed_reader.h"
#include "input_files.h"
#include "jsonl_text.h"
#include "prepare_progress.h"
#include "prepare_state.h"

namespace agenttune {

namespace fs = std::filesystem;
using namespace data;

namespace {

constexpr size_t kBatchBytes = 256 << 10;  // ~50 ms of encoding: locking is noise, the tail short

struct Record {
  uint32_t file = 0;
  bool file_end = false;  // a marker: the file is fully read; bytes/sha256 are set
  int64_t line = 0;       // 1-based line (JSONL) or 1 (a text file's single document)
  size_t begin = 0, end = 0;
  uint64_t bytes = 0;
  std::string sha256;
};

struct Batch {
  uint64_t seq = 0;
  std::string text;  // record bytes back to back, then kJsonPadding bytes of slack
  std::vector<Record> records;
};

struct Result {
  std::shared_ptr<Batch> batch;
  std::vector<int32_t> tokens;
  std::vector<size_t> offsets;  // per record into tokens, records + 1 entries
  std::vector<RecordStatus> status;
  std::map<size_t, std::string> errors;  // record index -> message
};

struct Pipeline {
  std::mutex mu;
  std::condition_variable cv_work, cv_done, cv_window;
  std::deque<std::shared_ptr<Batch>> work;
  std::map<uint64_t, Result> done;
  uint64_t issued = 0, written = 0, window = 8;
  bool reader_finished = false, stop = false;
  std::exception_ptr error;

  void abort(std::exception_ptr e) {
    std::lock_guard lock(mu);
    if (!error) error = e;
    stop = true;
    cv_work.notify_all();
    cv_done.notify_all();
    cv_window.notify_all();
  }
};

void push_batch(Pipeline& p, std::shared_ptr<Batch>& b) {
  if (b->records.empty()) return;
  b->text.append(kJsonPadding, ' ');
  std::unique_lock lock(p.mu);
  p.cv_window.wait(lock, [&] { return p.stop || p.issued - p.written < p.window; });
  if (p.stop) return;
  b->seq = p.issued++;
  p.work.push_back(std::move(b));
  p.cv_work.notify_one();
  b = std::make_shared<Batch>();
}

void read_inputs(Pipeline& p, const std::vector<InputFile>& files, const PrepareState& from,
                 PrepareProgress& progress) {
  auto batch = std::make_shared<Batch>();
  for (size_t f = from.resume_file; f < files.size() && !p.stop; ++f) {
    const int64_t skip = f == from.resume_file ? from.resume_line : 0;
    auto src = open_byte_source(files[f].path);
    ByteSource* raw = src.get();  // still valid after a LineReader takes ownership
    auto add = [&](int64_t line, std::string_view text) {
      Record r{static_cast<uint32_t>(f), false, line, batch->text.size(), 0, 0, {}};
      batch->text.append(text);
      r.end = batch->text.size();
      batch->records.push_back(std::move(r));
      if (batch->text.size() >= kBatchBytes) {
        push_batch(p, batch);
        progress.set_file_bytes(raw->raw_bytes_read());
      }
    };
    if (files[f].format == InputFormat::Jsonl) {
      LineReader lines(std::move(src));
      std::string_view line;
      for (int64_t n = 1; !p.stop && lines.next(line); ++n)
        if (n > skip) add(n, line);
      batch->records.push_back({static_cast<uint32_t>(f), true, 0, 0, 0, raw->raw_bytes_read(), raw->raw_sha256()});
    } else {
      std::string text = read_all(*src);
      if (skip < 1) add(1, text);
      batch->records.push_back(
          {static_cast<uint32_t>(f), true, 0, 0, 0, src->raw_bytes_read(), src->raw_sha256()});
    }
    progress.file_done(files[f].bytes);
  }
  push_batch(p, batch);
  std::lock_guard lock(p.mu);
  p.reader_finished = true;
  p.cv_work.notify_all();
  p.cv_done.notify_all();
}

Result process(Batch& b, const std::vector<InputFile>& files, const Tokenizer& tok,
               JsonlTextExtractor& json, const PrepareOptions& opts) {
  Result r;
  r.offsets.reserve(b.records.size() + 1);
  r.offsets.push_back(0);
  r.tokens.reserve(b.text.size() / 3);
  std::string error;
  for (size_t i = 0; i < b.records.size(); ++i) {
    const Record& rec = b.records[i];
    RecordStatus st = RecordStatus::Blank;
    if (!rec.file_end) {
      std::string_view raw(b.text.data() + rec.begin, rec.end - rec.begin), text = raw;
      const auto& in = files[rec.file];
      if (in.format == InputFormat::Jsonl) {
        st = json.extract(raw, text, error);
        if (st == RecordStatus::Bad) r.errors[i] = fmt::format("{}:{}: {}", in.path.string(), rec.line, error);
      } else {
        st = check_text(raw, error);
        if (st == RecordStatus::Bad) r.errors[i] = fmt::format("{}: {}", in.path.string(), error);
      }
      if (st == RecordStatus::Ok) tok.encode_into(text, r.tokens, opts.add_bos, opts.add_eos);
    }
    r.status.push_back(st);
    r.offsets.push_back(r.tokens.size());
  }
  return r;
}

void work(Pipeline& p, const std::vector<InputFile>& files, const Tokenizer& tok,
          const PrepareOptions& opts) {
  JsonlTextExtractor json(opts.text_field);
  for (;;) {
    std::shared_ptr<Batch> b;
    {
      std::unique_lock lock(p.mu);
      p.cv_work.wait(lock, [&] { return p.stop || !p.work.empty() || p.reader_finished; });
      if (p.stop || p.work.empty()) return;
      b = std::move(p.work.front());
      p.work.pop_front();
    }
    Result r = process(*b, files, tok, json, opts);
    r.batch = std::move(b);
    std::lock_guard lock(p.mu);
    const uint64_t seq = r.batch->seq;
    p.done.emplace(seq, std::move(r));
    p.cv_done.notify_all();
  }
}

// The ordered half: shards, counters, resume state.
class ShardSink {
 public:
  ShardSink(const PrepareOptions& opts, PrepareState state) : opts_(opts), st_(std::move(state)) {}

  void consume(const Result& r) {
    const auto& recs = r.batch->records;
    for (size_t i = 0; i < recs.size(); ++i) {
      const Record& rec = recs[i];
      auto& src = st_.manifest.sources[rec.file];
      if (rec.file_end) {
        src.bytes = rec.bytes;
        src.sha256 = rec.sha256;
        continue;
      }
      switch (r.status[i]) {
        case RecordStatus::Ok: {
          std::span<const int32_t> ids(r.tokens.data() + r.offsets[i], r.offsets[i + 1] - r.offsets[i]);
          add(ids);
          ++src.documents;
          src.tokens += static_cast<int64_t>(ids.size());
          break;
        }
        case RecordStatus::Empty:
          ++src.skipped;
          ++st_.empty_documents;
          break;
        case RecordStatus::Bad: {
          const std::string& msg = r.errors.at(i);
          if (opts_.on_error == OnError::Fail) throw Error(msg);
          ++src.skipped;
          ++st_.bad_records;
          if (st_.first_errors.size() < 5) st_.first_errors.push_back(msg);
          break;
        }
        case RecordStatus::Blank:
          break;
      }
      st_.resume_file = rec.file;
      st_.resume_line = rec.line;
      if (shard_tokens_ >= opts_.shard_tokens) close_shard();
    }
  }

  PrepareState finish() {
    if (shard_) close_shard();
    if (st_.manifest.documents == 0) fail_empty();
    st_.complete = true;
    st_.write(opts_.output_dir / kStateFile);
    st_.manifest.write(opts_.output_dir / "manifest.json");
    return st_;
  }
  int64_t tokens() const { return st_.manifest.tokens + shard_tokens_; }

 private:
  void add(std::span<const int32_t> ids) {
    if (!shard_) {
      auto name = fmt::format("shard_{:05d}", st_.manifest.shards.size());
      shard_ = std::make_unique<TokenShardWriter>(opts_.output_dir, name, st_.manifest.vocab_size);
    }
    shard_->add_document(ids);
    shard_tokens_ += static_cast<int64_t>(ids.size());
  }
  void close_shard() {
    ShardEntry e = shard_->finish();
    shard_.reset();
    shard_tokens_ = 0;
    st_.manifest.shards.push_back(e);
    st_.manifest.documents += e.documents;
    st_.manifest.tokens += e.tokens;
    st_.write(opts_.output_dir / kStateFile);
  }

  [[noreturn]] void fail_empty() const {
    std::vector<std::string> paths;
    for (const auto& f : st_.manifest.sources) paths.push_back(f.path);
    fail("corpus '{}': no document to write to {}: its {} input file(s) ({}) hold {} empty and {} skipped bad "
         "record(s) and nothing else",
         opts_.name.empty() ? opts_.output_dir.string() : opts_.name, opts_.output_dir.string(), paths.size(),
         join_first(paths), st_.empty_documents, st_.bad_records);
  }

  const PrepareOptions& opts_;
  PrepareState st_;
  std::unique_ptr<TokenShardWriter> shard_;
  int64_t shard_tokens_ = 0;
};

// Shards and partial files a resumed run will not reuse, and the temporaries of atomic writes a
// killed run left behind ("prepare_state.json.tmp.<pid>"); an old manifest is stale from here on.
void clear_stale(const fs::path& dir, const ShardManifest& kept) {
  std::set<std::string> keep;
  for (const auto& e : kept.shards) keep.insert(e.name + ".bin"), keep.insert(e.name + ".idx");
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool temporary =
        name.rfind(std::string(kStateFile) + ".tmp.", 0) == 0 || name.rfind("manifest.json.tmp.", 0) == 0;
    if ((name.rfind("shard_", 0) == 0 && !keep.count(name)) || name == "manifest.json" || temporary)
      remove_file(entry.path());
  }
}

PrepareReport report_of(const PrepareState& st, const std::vector<InputFile>& files, double seconds) {
  PrepareReport r;
  r.manifest = st.manifest;
  r.bad_records = st.bad_records;
  r.first_errors = st.first_errors;
  r.empty_documents = st.empty_documents;
  r.seconds = seconds;
  for (const auto& f : files) r.input_bytes += f.bytes;
  return r;
}

}  // namespace

PrepareReport prepare_corpus(const PrepareOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  if (opts.output_dir.empty()) fail("prepare: no output folder given");
  if (opts.shard_tokens <= 0) fail("prepare: shard_tokens must be positive, got {}", opts.shard_tokens);
  if (opts.text_field.empty()) fail("prepare: text_field must not be empty");
  const auto files = expand_inputs(opts.inputs);
  const Tokenizer tok = Tokenizer::load(opts.tokenizer);
  create_dirs(opts.output_dir);

  const std::string key = prepare_key(opts, tok.fingerprint(), files);
  PrepareState state;
  if (auto s = PrepareState::load_matching(opts.output_dir, key)) {
    state = std::move(*s);
    if (state.complete && fs::exists(opts.output_dir / "manifest.json")) {
      log::info("prepare: {} is already prepared from these inputs; nothing to do", opts.output_dir.string());
      return report_of(state, files, 0);
    }
    if (!state.complete)
      log::info("prepare: resuming after {} complete shard(s)", state.manifest.shards.size());
  }
  if (state.key.empty() || state.complete) {
    state = PrepareState{};
    state.key = key;
    auto& m = state.manifest;
    m.tokenizer_sha256 = tok.fingerprint();
    m.vocab_size = tok.vocab_size();
    m.dtype = shard_dtype_for_vocab(m.vocab_size);
    for (const auto& f : files) m.sources.push_back({f.path.string(), f.bytes, "", 0, 0, 0});
  }
  clear_stale(opts.output_dir, state.manifest);

  const int threads = opts.threads > 0 ? opts.threads : std::max(1u, std::thread::hardware_concurrency());
  Pipeline p;
  p.window = 4 * static_cast<uint64_t>(threads);
  PrepareProgress progress(files, opts.progress);
  ShardSink sink(opts, state);
  std::vector<std::thread> pool;
  auto guarded = [&p](auto fn) {
    return [&p, fn] {
      try {
        fn();
      } catch (...) {
        p.abort(std::current_exception());
      }
    };
  };
  pool.emplace_back(guarded([&] { read_inputs(p, files, state, progress); }));
  for (int i = 0; i < threads; ++i) pool.emplace_back(guarded([&] { work(p, files, tok, opts); }));

  PrepareState final_state;
  try {
    for (;;) {
      Result r;
      {
        std::unique_lock lock(p.mu);
        while (!p.stop && !p.done.count(p.written) && !(p.reader_finished && p.written == p.issued)) {
          p.cv_done.wait_for(lock, std::chrono::milliseconds(250));
          progress.update(sink.tokens());
        }
        if (p.stop) break;
        if (p.reader_finished && p.written == p.issued) break;
        auto it = p.done.find(p.written);
        r = std::move(it->second);
        p.done.erase(it);
        ++p.written;
        p.cv_window.notify_all();
      }
      sink.consume(r);
      progress.update(sink.tokens());
    }
    bool failed;
    {
      std::lock_guard lock(p.mu);
      failed = p.error != nullptr;
    }
    if (!failed) final_state = sink.finish();
  } catch (...) {
    p.abort(std::current_exception());
  }
  p.abort(nullptr);  // wakes every thread; a no-op for the error already recorded
  for (auto& t : pool) t.join();
  if (p.error) std::rethrow_exception(p.error);
  progress.finish(final_state.manifest.tokens);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report_of(final_state, files, seconds);
}

}  // namespace agenttune
