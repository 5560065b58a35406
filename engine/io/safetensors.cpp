// safetensors reader and writer.
#include "engine/io/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.cpp reads and writes raw little-endian bytes; a big-endian host needs byte swapping"
#endif

namespace dgpipe::engine {

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull * 1024 * 1024;  // the reference implementation's limit
const char* const kMetadataKey = "__metadata__";

// Only the dtypes the engine has; safetensors also defines U16, U32, U64 and float8 types, which are refused.
bool dtype_from_safetensors(const std::string& name, DType& out) {
  for (DType t : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i8, DType::u8, DType::i16,
                  DType::i32, DType::i64, DType::boolean}) {
    if (name == safetensors_dtype_name(t)) {
      out = t;
      return true;
    }
  }
  return false;
}

std::string errno_text() {
  return std::strerror(errno);
}

// ---------------- header validation ----------------

SafetensorsEntry parse_entry(const std::string& path, const std::string& name, const json& info,
                             uint64_t data_size) {
  DGP_CHECK(info.is_object(), "safetensors: " << path << ": tensor '" << name
                                              << "': entry must be a JSON object, got " << info.type_name());
  for (const auto& field : info.items()) {
    const std::string& k = field.key();
    DGP_CHECK(k == "dtype" || k == "shape" || k == "data_offsets",
              "safetensors: " << path << ": tensor '" << name << "': unexpected field '" << k << "'");
  }
  for (const char* required : {"dtype", "shape", "data_offsets"})
    DGP_CHECK(info.contains(required),
              "safetensors: " << path << ": tensor '" << name << "': missing field '" << required << "'");

  SafetensorsEntry e;
  const json& dtype = info["dtype"];
  DGP_CHECK(dtype.is_string(),
            "safetensors: " << path << ": tensor '" << name << "': dtype must be a string");
  DGP_CHECK(dtype_from_safetensors(dtype.get<std::string>(), e.dtype),
            "safetensors: " << path << ": tensor '" << name << "': unsupported dtype '"
                            << dtype.get<std::string>()
                            << "' (supported: F32 F64 F16 BF16 I8 U8 I16 I32 I64 BOOL)");

  const json& shape = info["shape"];
  DGP_CHECK(shape.is_array(), "safetensors: " << path << ": tensor '" << name << "': shape must be an array");
  DGP_CHECK(shape.size() <= 16, "safetensors: " << path << ": tensor '" << name << "': " << shape.size()
                                                << " dimensions (at most 16 are supported)");
  // numel * itemsize is computed without overflow: every partial product is kept below 2^63.
  uint64_t bytes = dtype_size(e.dtype);
  const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (size_t d = 0; d < shape.size(); ++d) {
    const json& dim = shape[d];
    DGP_CHECK(dim.is_number_unsigned() || (dim.is_number_integer() && dim.get<int64_t>() >= 0),
              "safetensors: " << path << ": tensor '" << name << "': shape[" << d << "] = " << dim.dump()
                              << " is not a non-negative integer");
    uint64_t n = dim.get<uint64_t>();
    DGP_CHECK(n <= limit,
              "safetensors: " << path << ": tensor '" << name << "': shape[" << d << "] too large");
    e.shape.push_back(static_cast<int64_t>(n));
    DGP_CHECK(n == 0 || bytes <= limit / n,
              "safetensors: " << path << ": tensor '" << name << "': shape " << shape.dump() << " overflows");
    bytes *= n;
  }

  const json& offsets = info["data_offsets"];
  DGP_CHECK(
      offsets.is_array() && offsets.size() == 2,
      "safetensors: " << path << ": tensor '" << name << "': data_offsets must be an array [begin, end]");
  for (size_t i = 0; i < 2; ++i)
    DGP_CHECK(
        offsets[i].is_number_unsigned() || (offsets[i].is_number_integer() && offsets[i].get<int64_t>() >= 0),
        "safetensors: " << path << ": tensor '" << name << "': data_offsets[" << i
                        << "] = " << offsets[i].dump() << " is not a non-negative integer");
  e.begin = offsets[0].get<uint64_t>();
  e.end = offsets[1].get<uint64_t>();
  DGP_CHECK(e.begin <= e.end, "safetensors: " << path << ": tensor '" << name << "': data_offsets ["
                                              << e.begin << ", " << e.end << "] end before begin");
  DGP_CHECK(e.end <= data_size, "safetensors: " << path << ": tensor '" << name << "': data_offsets ["
                                                << e.begin << ", " << e.end << "] run past the data section ("
                                                << data_size << " bytes; file truncated?)");
  DGP_CHECK(e.end - e.begin == bytes,
            "safetensors: " << path << ": tensor '" << name << "': data_offsets [" << e.begin << ", " << e.end
                            << "] span " << e.end - e.begin << " bytes but "
                            << safetensors_dtype_name(e.dtype) << shape_str(e.shape) << " needs " << bytes);
  return e;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& meta) {
  std::map<std::string, std::string> out;
  if (meta.is_null()) return out;
  DGP_CHECK(meta.is_object(), "safetensors: " << path << ": __metadata__ must be an object of strings, got "
                                              << meta.type_name());
  for (const auto& item : meta.items()) {
    DGP_CHECK(item.value().is_string(), "safetensors: " << path << ": __metadata__ field '" << item.key()
                                                        << "' must be a string, got "
                                                        << item.value().type_name());
    out[item.key()] = item.value().get<std::string>();
  }
  return out;
}

// Offsets must tile the data section exactly: sorted by begin, each tensor starts where the previous one
// ended, the first at 0 and the last at the end of the file. This rejects overlapping tensors, gaps and
// trailing bytes, as the reference implementation does, while accepting tensors listed in any order.
void check_tiling(const std::string& path, const std::map<std::string, SafetensorsEntry>& entries,
                  uint64_t data_size) {
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> order;
  for (const auto& [name, e] : entries) order.emplace_back(&name, &e);
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.second->begin != b.second->begin ? a.second->begin < b.second->begin
                                              : a.second->end < b.second->end;
  });
  uint64_t expected = 0;
  const std::string* previous = nullptr;
  for (const auto& [name, e] : order) {
    if (e->begin < expected) {
      DGP_FAIL("safetensors: " << path << ": tensor '" << *name << "': data_offsets [" << e->begin << ", "
                               << e->end << "] overlap tensor '" << *previous << "' (which ends at "
                               << expected << ")");
    }
    DGP_CHECK(e->begin == expected, "safetensors: " << path << ": tensor '" << *name << "': data_offsets ["
                                                    << e->begin << ", " << e->end << "] leave a gap of "
                                                    << e->begin - expected << " bytes after offset "
                                                    << expected);
    expected = e->end;
    previous = name;
  }
  DGP_CHECK(expected == data_size, "safetensors: " << path << ": the tensors cover " << expected
                                                   << " bytes of a data section of " << data_size
                                                   << " bytes (trailing bytes or a lying header)");
}

void write_all(std::FILE* f, const void* data, size_t n, const std::string& tmp) {
  if (n == 0) return;
  DGP_CHECK(std::fwrite(data, 1, n, f) == n, "safetensors: " << tmp << ": write failed: " << errno_text());
}

}  // namespace

// ---------------- reading ----------------

SafetensorsIndex read_safetensors_index(const std::string& path) {
  std::error_code ec;
  uint64_t file_size = std::filesystem::file_size(path, ec);
  DGP_CHECK(!ec, "safetensors: cannot open " << path << ": " << ec.message());
  DGP_CHECK(file_size >= 8, "safetensors: " << path << ": file is " << file_size
                                            << " bytes, too short for the 8-byte header length (truncated?)");
  std::ifstream in(path, std::ios::binary);
  DGP_CHECK(in, "safetensors: cannot open " << path << ": " << errno_text());
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  DGP_CHECK(in.gcount() == 8, "safetensors: " << path << ": cannot read the header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  DGP_CHECK(header_len <= file_size - 8,
            "safetensors: " << path << ": header length " << header_len << " exceeds the " << file_size - 8
                            << " bytes after the length field (truncated or not a "
                               "safetensors file)");
  DGP_CHECK(header_len <= kMaxHeaderBytes, "safetensors: " << path << ": header length " << header_len
                                                           << " exceeds the limit of " << kMaxHeaderBytes
                                                           << " bytes");
  DGP_CHECK(header_len >= 2, "safetensors: " << path << ": header length " << header_len << " is too small");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  DGP_CHECK(static_cast<uint64_t>(in.gcount()) == header_len,
            "safetensors: " << path << ": cannot read the header");
  DGP_CHECK(header[0] == '{',
            "safetensors: " << path << ": header must be a JSON object (starts with '" << header[0] << "')");

  // Duplicate top-level keys would silently keep one of two tensors: refuse them while parsing.
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty())
        duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json root;
  try {
    root = json::parse(header, on_event);
  } catch (const json::exception& e) {
    DGP_FAIL("safetensors: " << path << ": header is not valid JSON: " << e.what());
  }
  DGP_CHECK(root.is_object(),
            "safetensors: " << path << ": header must be a JSON object, got " << root.type_name());
  DGP_CHECK(duplicate.empty(),
            "safetensors: " << path << ": tensor '" << duplicate << "' appears twice in the header");

  SafetensorsIndex index;
  index.data_start = 8 + header_len;
  const uint64_t data_size = file_size - index.data_start;
  for (const auto& item : root.items()) {
    if (item.key() == kMetadataKey) {
      index.metadata = parse_metadata(path, item.value());
      continue;
    }
    DGP_CHECK(!item.key().empty(), "safetensors: " << path << ": a tensor has an empty name");
    index.entries[item.key()] = parse_entry(path, item.key(), item.value(), data_size);
  }
  check_tiling(path, index.entries, data_size);
  return index;
}

SafetensorsFile load_safetensors(const std::string& path) {
  SafetensorsIndex index = read_safetensors_index(path);
  std::ifstream in(path, std::ios::binary);
  DGP_CHECK(in, "safetensors: cannot open " << path << ": " << errno_text());
  SafetensorsFile out;
  out.metadata = std::move(index.metadata);
  for (const auto& [name, e] : index.entries) {
    Tensor t = empty(e.shape, TensorOptions(e.dtype, Device::cpu()));
    const uint64_t n = e.end - e.begin;
    if (n > 0) {
      in.seekg(static_cast<std::streamoff>(index.data_start + e.begin));
      in.read(static_cast<char*>(t.raw_data()), static_cast<std::streamsize>(n));
      DGP_CHECK(in && static_cast<uint64_t>(in.gcount()) == n,
                "safetensors: " << path << ": tensor '" << name << "': short read of " << n
                                << " bytes (file changed while reading?)");
    }
    out.tensors.emplace(name, std::move(t));
  }
  return out;
}

SafetensorsFile load_safetensors(const std::string& path, Device device) {
  SafetensorsFile f = load_safetensors(path);
  if (device.is_cpu()) return f;
  for (auto& [name, t] : f.tensors) t = t.to(device);
  return f;
}

// ---------------- writing ----------------

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Host copies, in key order (std::map), packed back to back.
  std::vector<std::pair<const std::string*, Tensor>> host;
  json header = json::object();
  if (!metadata.empty()) {
    json meta = json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header[kMetadataKey] = meta;
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    DGP_CHECK(!name.empty(), "safetensors: " << path << ": a tensor has an empty name");
    DGP_CHECK(name != kMetadataKey, "safetensors: " << path << ": '" << kMetadataKey << "' is reserved");
    DGP_CHECK(t.defined(), "safetensors: " << path << ": tensor '" << name << "' is undefined");
    Tensor c = t.detach().to(Device::cpu()).contiguous();
    json shape = json::array();
    for (int64_t d : c.shape()) shape.push_back(d);
    uint64_t nbytes = c.nbytes();
    header[name] = {{"dtype", safetensors_dtype_name(c.dtype())},
                    {"shape", shape},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    host.emplace_back(&name, std::move(c));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    DGP_FAIL("safetensors: " << path << ": cannot encode the header (names and metadata must be UTF-8): "
                             << e.what());
  }
  // Pad with spaces to a multiple of 8 so the data section is 8-byte aligned when the file is mapped.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len_bytes[8];
  uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>((len >> (8 * i)) & 0xff);

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  DGP_CHECK(f != nullptr, "safetensors: cannot create " << tmp << ": " << errno_text());
  try {
    write_all(f, len_bytes, 8, tmp);
    write_all(f, text.data(), text.size(), tmp);
    for (const auto& [name, c] : host) write_all(f, c.raw_data(), c.nbytes(), tmp);
    DGP_CHECK(std::fflush(f) == 0, "safetensors: " << tmp << ": flush failed: " << errno_text());
    // Durable before the rename, so a crash never leaves a complete-looking name over partial bytes.
    DGP_CHECK(::fsync(::fileno(f)) == 0, "safetensors: " << tmp << ": fsync failed: " << errno_text());
  } catch (...) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::fclose(f) != 0) {
    std::string why = errno_text();
    std::remove(tmp.c_str());
    DGP_FAIL("safetensors: " << tmp << ": close failed: " << why);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = errno_text();
    std::remove(tmp.c_str());
    DGP_FAIL("safetensors: cannot rename " << tmp << " to " << path << ": " << why);
  }
}

}  // namespace dgpipe::engine
