#include "compressed_reader.h"

#include <zlib.h>
#include <zstd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "agenttune/util/error.h"
#include "agenttune/util/sha256.h"

namespace agenttune::data {

namespace fs = std::filesystem;

namespace {

constexpr size_t kChunk = 1 << 20;

// The file as stored, counted and hashed.
class RawFile {
 public:
  explicit RawFile(fs::path path) : path_(std::move(path)), f_(std::fopen(path_.c_str(), "rb")) {
    if (!f_) fail("{}: cannot open: {}", path_.string(), std::strerror(errno));
  }
  ~RawFile() { std::fclose(f_); }
  size_t read(char* dst, size_t n) {
    size_t got = std::fread(dst, 1, n, f_);
    if (got < n && std::ferror(f_)) fail("{}: read failed: {}", path_.string(), std::strerror(errno));
    sha_.update(dst, got);
    bytes_ += got;
    return got;
  }
  size_t peek(unsigned char* dst, size_t n) {
    size_t got = std::fread(dst, 1, n, f_);
    std::rewind(f_);
    return got;
  }
  uint64_t bytes() const { return bytes_; }
  std::string sha256() { return sha_.hex_digest(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  FILE* f_;
  Sha256 sha_;
  uint64_t bytes_ = 0;
};

class Base : public ByteSource {
 public:
  explicit Base(const fs::path& p) : raw_(p) {}
  uint64_t raw_bytes_read() const override { return raw_.bytes(); }
  std::string raw_sha256() override { return raw_.sha256(); }
  RawFile& raw() { return raw_; }

 protected:
  RawFile raw_;
};

class PlainSource final : public Base {
 public:
  using Base::Base;
  size_t read(char* dst, size_t n) override { return raw_.read(dst, n); }
};

class GzipSource final : public Base {
 public:
  explicit GzipSource(const fs::path& p) : Base(p), in_(kChunk) {
    // 15 + 32: zlib or gzip header, detected.
    if (inflateInit2(&z_, 15 + 32) != Z_OK) fail("{}: zlib init failed", p.string());
  }
  ~GzipSource() override { inflateEnd(&z_); }
  size_t read(char* dst, size_t n) override {
    z_.next_out = reinterpret_cast<Bytef*>(dst);
    z_.avail_out = static_cast<uInt>(n);
    while (z_.avail_out == n && !done_) {
      if (z_.avail_in == 0) {
        z_.avail_in = static_cast<uInt>(raw_.read(in_.data(), in_.size()));
        z_.next_in = reinterpret_cast<Bytef*>(in_.data());
        if (z_.avail_in == 0) {
          if (in_stream_) fail("{}: truncated gzip stream", raw_.path().string());
          done_ = true;
          break;
        }
      }
      in_stream_ = true;
      int rc = inflate(&z_, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) {
        in_stream_ = false;  // concatenated members (pigz, cat a.gz b.gz) continue
        inflateReset(&z_);
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        fail("{}: corrupt gzip data: {}", raw_.path().string(), z_.msg ? z_.msg : "inflate failed");
      }
    }
    return n - z_.avail_out;
  }

 private:
  z_stream z_{};
  std::vector<char> in_;
  bool in_stream_ = false, done_ = false;
};

class ZstdSource final : public Base {
 public:
  explicit ZstdSource(const fs::path& p) : Base(p), ctx_(ZSTD_createDStream()), in_(ZSTD_DStreamInSize()) {
    if (!ctx_) fail("{}: zstd init failed", p.string());
  }
  ~ZstdSource() override { ZSTD_freeDStream(ctx_); }
  size_t read(char* dst, size_t n) override {
    ZSTD_outBuffer out{dst, n, 0};
    while (out.pos == 0 && !done_) {
      if (in_pos_ == in_len_) {
        in_len_ = raw_.read(in_.data(), in_.size());
        in_pos_ = 0;
        if (in_len_ == 0) {
          if (pending_) fail("{}: truncated zstd stream", raw_.path().string());
          done_ = true;
          break;
        }
      }
      ZSTD_inBuffer in{in_.data(), in_len_, in_pos_};
      size_t rc = ZSTD_decompressStream(ctx_, &out, &in);
      if (ZSTD_isError(rc)) fail("{}: corrupt zstd data: {}", raw_.path().string(), ZSTD_getErrorName(rc));
      in_pos_ = in.pos;
      pending_ = rc != 0;  // 0 = a frame just ended cleanly
    }
    return out.pos;
  }

 private:
  ZSTD_DStream* ctx_;
  std::vector<char> in_;
  size_t in_pos_ = 0, in_len_ = 0;
  bool pending_ = false, done_ = false;
};

}  // namespace

std::unique_ptr<ByteSource> open_byte_source(const fs::path& path) {
  unsigned char magic[4] = {};
  size_t got;
  {
    RawFile probe(path);
    got = probe.peek(magic, sizeof magic);
  }
  if (got >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) return std::make_unique<GzipSource>(path);
  if (got >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd)
    return std::make_unique<ZstdSource>(path);
  return std::make_unique<PlainSource>(path);
}

bool LineReader::next(std::string_view& line) {
  for (;;) {
    const size_t nl = buf_.find('\n', pos_);
    if (nl != std::string::npos) {
      size_t end = nl > pos_ && buf_[nl - 1] == '\r' ? nl - 1 : nl;
      line = std::string_view(buf_).substr(pos_, end - pos_);
      pos_ = nl + 1;
      return true;
    }
    if (eof_) {
      if (pos_ >= buf_.size()) return false;
      line = std::string_view(buf_).substr(pos_);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      pos_ = buf_.size();
      return true;
    }
    // Keep only the unfinished line, then append a chunk after it.
    buf_.erase(0, pos_);
    pos_ = 0;
    const size_t old = buf_.size();
    buf_.resize(old + kChunk);
    const size_t got = src_->read(buf_.data() + old, kChunk);
    buf_.resize(old + got);
    eof_ = got == 0;
  }
}

std::string read_all(ByteSource& src) {
  std::string out;
  for (;;) {
    const size_t old = out.size();
    out.resize(old + kChunk);
    const size_t got = src.read(out.data() + old, kChunk);
    out.resize(old + got);
    if (got == 0) return out;
  }
}

}  // namespace agenttune::data
