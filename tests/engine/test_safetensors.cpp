#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/io/safetensors.h"
#include "engine/ops.h"

using namespace dgpipe::engine;
namespace fs = std::filesystem;

namespace {

// A scratch directory per test process, removed at exit of each test.
class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dgpipe_test_safetensors_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A hand-made file: length prefix + header text + data bytes.
std::string make_file(const std::string& header, const std::string& data,
                      uint64_t declared_len = UINT64_MAX) {
  uint64_t len = declared_len == UINT64_MAX ? header.size() : declared_len;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + header + data;
}

// Expects load_safetensors(path) to throw an Error whose message names the file and contains `needle`.
void expect_rejected(const std::string& path, const std::string& needle) {
  try {
    load_safetensors(path);
    ADD_FAILURE() << "expected " << path << " to be rejected (" << needle << ")";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << "message does not name the file: " << what;
    EXPECT_NE(what.find(needle), std::string::npos)
        << "message does not mention '" << needle << "': " << what;
  }
}

// Writes `bytes` to `path` and expects load_safetensors to reject it as expect_rejected does.
void expect_bytes_rejected(const std::string& path, const std::string& bytes, const std::string& needle) {
  write_bytes(path, bytes);
  expect_rejected(path, needle);
}

uint64_t header_length(const std::string& bytes) {
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | static_cast<unsigned char>(bytes[i]);
  return len;
}

}  // namespace

TEST_F(Safetensors, RoundTripOfEveryDtype) {
  std::map<std::string, Tensor> tensors;
  tensors["f32"] = from_vector(std::vector<double>{1.5, -2.25, 3.0, 1e-30, 7.0, 0.0}, {2, 3}, DType::f32);
  tensors["f64"] = from_vector(std::vector<double>{3.141592653589793, -1e300}, {2}, DType::f64);
  tensors["f16"] = from_vector(std::vector<double>{0.5, -65504.0, 0.000061035}, {3}, DType::f16);
  tensors["bf16"] = from_vector(std::vector<double>{1.0, -3.5, 1e20}, {1, 3}, DType::bf16);
  tensors["i8"] = from_vector(std::vector<double>{-128, 127}, {2}, DType::i8);
  tensors["u8"] = from_vector(std::vector<double>{0, 255, 9}, {3}, DType::u8);
  tensors["i16"] = from_vector(std::vector<double>{-32768, 32767}, {2}, DType::i16);
  tensors["i32"] = from_vector(std::vector<double>{-2147483648.0, 2147483647.0}, {2}, DType::i32);
  tensors["i64"] = from_vector(std::vector<int64_t>{-(int64_t(1) << 62), 42, (int64_t(1) << 53) + 1}, {3});
  tensors["bool"] = from_vector(std::vector<double>{1, 0, 1}, {3}, DType::boolean);
  tensors["scalar"] = full({}, 2.5);
  tensors["empty"] = zeros({0, 4});
  // A non-contiguous view is written as its logical values.
  tensors["transposed"] = arange(0, 6, 1, DType::f32).reshape({2, 3}).t();
  std::map<std::string, std::string> metadata{{"format", "pt"}, {"step", "1200"}, {"note", "ünïcode ✓"}};
  std::string file = path("all.safetensors");
  save_safetensors(file, tensors, metadata);
  EXPECT_FALSE(fs::exists(file + ".tmp"));

  SafetensorsFile loaded = load_safetensors(file);
  EXPECT_EQ(loaded.metadata, metadata);
  ASSERT_EQ(loaded.tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_EQ(loaded.tensors.count(name), 1u) << name;
    const Tensor& got = loaded.tensors.at(name);
    EXPECT_EQ(got.dtype(), t.dtype()) << name;
    EXPECT_EQ(got.shape(), t.shape()) << name;
    EXPECT_TRUE(got.is_contiguous()) << name;
    // Compare raw bits through a contiguous copy (NaN-safe and exact for every dtype).
    Tensor want = t.contiguous();
    ASSERT_EQ(got.nbytes(), want.nbytes()) << name;
    EXPECT_EQ(std::memcmp(got.raw_data(), want.raw_data(), want.nbytes()), 0) << name;
  }
  EXPECT_EQ(loaded.tensors.at("i64").to_vector()[2], static_cast<double>((int64_t(1) << 53) + 1));
  EXPECT_EQ(loaded.tensors.at("transposed").to_vector(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
}

TEST_F(Safetensors, LayoutFollowsTheReferenceWriter) {
  std::string file = path("layout.safetensors");
  save_safetensors(file, {{"b", ones({3})}, {"a", zeros({2, 2}, DType::f64)}, {"c", ones({1}, DType::u8)}},
                   {{"k", "v"}});
  std::string bytes = read_bytes(file);
  uint64_t n = header_length(bytes);
  EXPECT_EQ(n % 8, 0u) << "header must be padded to 8 bytes";
  std::string header = bytes.substr(8, n);
  size_t json_end = header.find_last_not_of(' ') + 1;
  EXPECT_EQ(header[json_end - 1], '}');
  EXPECT_LT(n - json_end, 8u) << "only the padding follows the JSON";
  auto j = nlohmann::json::parse(header);
  // Keys sorted, offsets contiguous from 0 in key order, file ends with the last tensor.
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::json::array({0, 32}));
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json::array({32, 44}));
  EXPECT_EQ(j["c"]["data_offsets"], nlohmann::json::array({44, 45}));
  EXPECT_EQ(j["a"]["dtype"], "F64");
  EXPECT_EQ(j["__metadata__"]["k"], "v");
  EXPECT_EQ(bytes.size(), 8 + n + 45);
  EXPECT_LT(header.find("\"a\""), header.find("\"b\""));
  // Saving over an existing file replaces it.
  save_safetensors(file, {{"only", ones({1})}});
  EXPECT_EQ(load_safetensors(file).tensors.size(), 1u);
  SafetensorsIndex index = read_safetensors_index(file);
  EXPECT_EQ(index.entries.at("only").dtype, DType::f32);
  EXPECT_EQ(index.data_start % 8, 0u);
}

TEST_F(Safetensors, ReadsAFileWrittenByPythonSafetensors) {
  const char* root = std::getenv("DGPIPE_SOURCE_DIR");
  std::string file = std::string(root ? root : ".") + "/tests/data/python_written.safetensors";
  ASSERT_TRUE(fs::exists(file)) << file << " missing (run scripts/make_safetensors_fixture.py)";
  SafetensorsFile f = load_safetensors(file);
  EXPECT_EQ(f.metadata.at("format"), "pt");
  EXPECT_EQ(f.metadata.at("written_by"), "make_safetensors_fixture.py");
  ASSERT_EQ(f.tensors.size(), 12u);
  const auto& t = f.tensors;
  EXPECT_EQ(t.at("weight.f32").shape(), (Shape{2, 3}));
  EXPECT_EQ(t.at("weight.f32").to_vector(), (std::vector<double>{-1.0, -0.5, 0.0, 0.5, 1.0, 1.5}));
  EXPECT_EQ(t.at("weight.f64").dtype(), DType::f64);
  EXPECT_EQ(t.at("weight.f64").to_vector(), (std::vector<double>{1.0 / 3.0, -2.5e-300}));
  EXPECT_EQ(t.at("half.f16").dtype(), DType::f16);
  EXPECT_EQ(t.at("half.f16").to_vector(), (std::vector<double>{0.5, -2.0, 65504.0, 1.0 / 1024.0}));
  EXPECT_EQ(t.at("half.bf16").dtype(), DType::bf16);
  EXPECT_EQ(t.at("half.bf16").to_vector(), (std::vector<double>{3.0, -0.15625, std::ldexp(1.0, 100)}));
  EXPECT_EQ(t.at("ids.i64").to_vector(), (std::vector<double>{0, -1, std::ldexp(1.0, 40), 7}));
  EXPECT_EQ(t.at("ids.i32").to_vector(), (std::vector<double>{-2147483648.0, 5, 2147483647.0}));
  EXPECT_EQ(t.at("small.i16").to_vector(), (std::vector<double>{-300, 300}));
  EXPECT_EQ(t.at("small.i8").to_vector(), (std::vector<double>{-128, 127, 0}));
  EXPECT_EQ(t.at("bytes.u8").to_vector(), (std::vector<double>{0, 255, 17}));
  EXPECT_EQ(t.at("mask.bool").dtype(), DType::boolean);
  EXPECT_EQ(t.at("mask.bool").to_vector(), (std::vector<double>{1, 0, 1, 1}));
  EXPECT_EQ(t.at("scalar").dim(), 0);
  EXPECT_EQ(t.at("scalar").item(), 42.0);
  EXPECT_EQ(t.at("empty").shape(), (Shape{0, 3}));
  // And what we write from it, Python would read back: same header entries and bytes.
  std::string copy = path("copy.safetensors");
  save_safetensors(copy, f.tensors, f.metadata);
  SafetensorsFile again = load_safetensors(copy);
  for (const auto& [name, x] : f.tensors)
    EXPECT_EQ(std::memcmp(again.tensors.at(name).raw_data(), x.raw_data(), x.nbytes()), 0) << name;
}

TEST_F(Safetensors, RejectsATruncatedFile) {
  std::string good = path("good.safetensors");
  save_safetensors(good, {{"w", ones({4, 4})}, {"z", ones({8})}});
  std::string bytes = read_bytes(good);
  std::string file = path("truncated.safetensors");
  expect_bytes_rejected(file, bytes.substr(0, bytes.size() - 5), "data_offsets");
  expect_bytes_rejected(file, bytes.substr(0, 5), "too short");
}

TEST_F(Safetensors, RejectsAHeaderLengthLargerThanTheFile) {
  std::string file = path("long_header.safetensors");
  expect_bytes_rejected(file, make_file("{}      ", "", 1000), "header length 1000");
  expect_bytes_rejected(file, make_file("{}      ", "", UINT64_MAX - 1), "exceeds");
}

TEST_F(Safetensors, RejectsLyingDataOffsets) {
  std::string file = path("lying.safetensors");
  std::string data(24, '\0');
  // 2x3 f32 needs 24 bytes, the header says 20
  expect_bytes_rejected(
      file, make_file(R"({"x":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", data.substr(0, 20)),
      "'x'");
  // past the end of the data section
  expect_bytes_rejected(file, make_file(R"({"x":{"dtype":"F32","shape":[2,3],"data_offsets":[4,28]}})", data),
                        "past the data section");
  // overlapping tensors
  expect_bytes_rejected(file,
                        make_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                  R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                                  data),
                        "overlap");
  // a gap between tensors
  expect_bytes_rejected(file,
                        make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
                                  data),
                        "gap");
  // trailing bytes no tensor accounts for
  expect_bytes_rejected(file, make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data),
                        "trailing");
  // end before begin, negative values, wrong arity
  expect_bytes_rejected(file, make_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data),
                        "end before begin");
  expect_bytes_rejected(file, make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", data),
                        "data_offsets[0]");
  expect_bytes_rejected(file, make_file(R"({"a":{"dtype":"F32","shape":[6],"data_offsets":[0]}})", data),
                        "data_offsets");
  // Tensors listed out of order are fine when they tile the data section.
  write_bytes(file, make_file(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},)"
                              R"("a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})",
                              data));
  EXPECT_EQ(load_safetensors(file).tensors.size(), 2u);
}

TEST_F(Safetensors, RejectsANonObjectHeader) {
  std::string file = path("array.safetensors");
  expect_bytes_rejected(file, make_file("[1, 2, 3]", ""), "JSON object");
  expect_bytes_rejected(file, make_file("{\"a\": ", ""), "not valid JSON");
  expect_bytes_rejected(file, make_file(R"({"a": [1, 2]})", ""), "'a'");
  expect_bytes_rejected(file, make_file(R"({"__metadata__": {"k": 3}})", ""), "__metadata__");
}

TEST_F(Safetensors, RejectsAnUnknownDtypeAndBadShapes) {
  std::string file = path("dtype.safetensors");
  std::string data(8, '\0');
  expect_bytes_rejected(
      file, make_file(R"({"w":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", data), "F8_E4M3");
  expect_bytes_rejected(file, make_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data),
                        "shape[0]");
  expect_bytes_rejected(file, make_file(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", data),
                        "shape[0]");
  write_bytes(
      file, make_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", data));
  expect_rejected(file, "overflows");
  expect_bytes_rejected(file, make_file(R"({"w":{"dtype":"F32","shape":[2]}})", data),
                        "missing field 'data_offsets'");
  expect_bytes_rejected(
      file, make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", data), "extra");
  expect_bytes_rejected(file,
                        make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                  R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                  data),
                        "twice");
}

TEST_F(Safetensors, MissingFileAndBadNamesOnSave) {
  std::string missing = path("does_not_exist.safetensors");
  expect_rejected(missing, "cannot open");
  EXPECT_THROW(save_safetensors(path("x.safetensors"), {{"__metadata__", ones({1})}}), Error);
  EXPECT_THROW(save_safetensors(path("x.safetensors"), {{"", ones({1})}}), Error);
  EXPECT_THROW(save_safetensors(path("x.safetensors"), {{"t", Tensor()}}), Error);
  EXPECT_THROW(save_safetensors(path("no_such_dir/x.safetensors"), {{"t", ones({1})}}), Error);
  EXPECT_FALSE(fs::exists(path("x.safetensors")));
}

TEST_F(Safetensors, LoadOntoADevice) {
  std::string file = path("dev.safetensors");
  save_safetensors(file, {{"w", full({2}, 3.0)}});
  SafetensorsFile cpu = load_safetensors(file, Device::cpu());
  EXPECT_EQ(cpu.tensors.at("w").to_vector(), (std::vector<double>{3.0, 3.0}));
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: the cuda half of this test is skipped";
  SafetensorsFile gpu = load_safetensors(file, Device::cuda(0));
  EXPECT_TRUE(gpu.tensors.at("w").is_cuda());
  EXPECT_EQ(gpu.tensors.at("w").to_vector(), (std::vector<double>{3.0, 3.0}));
  // and back: a CUDA tensor is saved through a host copy
  save_safetensors(file, gpu.tensors);
  EXPECT_EQ(load_safetensors(file).tensors.at("w").to_vector(), (std::vector<double>{3.0, 3.0}));
}
