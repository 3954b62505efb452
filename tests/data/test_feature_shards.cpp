// data/feature_shards.h: reading a feature directory of `vlpeft extract-features` by image id (a directory written
// here with safetensors shards and an index.json as the extractor writes them; the extractor itself is tested
// with real towers in tests/trainer/test_cli.cpp), converting stored F16 to F32, and errors naming the file or id.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "data/feature_shards.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"

namespace vlp::data {
namespace {

namespace fs = std::filesystem;

using ::vlp::test::error_of;

// Three images in two shards, features [2, 3] stored as dtype.
fs::path write_dir(const std::string& name, DType dtype, std::vector<Tensor>* values) {
  fs::path dir = test::temp_dir(name);
  const std::vector<std::string> ids = {"COCO_val2014_000000000001", "COCO_val2014_000000000002", "dev-1-0-img0"};
  for (int i = 0; i < 3; ++i) values->push_back(test::rand_input({2, 3}, 40 + uint64_t(i), DType::F32, false));
  auto stored = [&](int i) { return convert(values->at(size_t(i)), dtype); };
  save_safetensors((dir / "features-00000.safetensors").string(), {{ids[0], stored(0)}, {ids[1], stored(1)}});
  save_safetensors((dir / "features-00001.safetensors").string(), {{ids[2], stored(2)}});
  nlohmann::json index = {{"format", "vlpeft-features"}, {"version", 1}, {"tower", "vit"}, {"kind", "grid"},
                          {"dtype", std::string(dtype_name(dtype))}, {"shard_size", 2}, {"grid", {1, 2}},
                          {"feature_shape", {2, 3}},
                          {"shards", {{{"shard", 0}, {"file", "features-00000.safetensors"}, {"ids", {ids[0], ids[1]}}},
                                      {{"shard", 1}, {"file", "features-00001.safetensors"}, {"ids", {ids[2]}}}}}};
  std::ofstream(dir / "index.json") << index.dump(1);
  return dir;
}

TEST(FeatureShards, ReadsFeaturesByImageId) {
  for (DType dtype : {DType::F32, DType::F16}) {
    std::vector<Tensor> v;
    fs::path dir = write_dir("feature_shards", dtype, &v);
    FeatureShardIndex index = read_feature_shard_index(dir.string());
    EXPECT_EQ(index.tower, "vit");
    EXPECT_EQ(index.kind, "grid");
    EXPECT_EQ(index.dtype, dtype);
    EXPECT_EQ(index.feature_shape, (Shape{2, 3}));
    EXPECT_EQ(index.shards.size(), 3u);
    // The ImagePathFn names the shard holding an id; the tensor comes out of it as F32.
    const std::string shard = feature_shard_files(index)("dev-1-0-img0");
    EXPECT_EQ(fs::path(shard).filename(), "features-00001.safetensors");
    const double tol = dtype == DType::F16 ? 1e-3 : 0.0;
    Tensor one = read_shard_features(shard, "dev-1-0-img0");
    EXPECT_EQ(one.dtype(), DType::F32);
    EXPECT_TRUE(test::all_close(one, v[2], tol, tol));
    // A batch across shards, in the order asked.
    Tensor b = read_image_features(index, {"dev-1-0-img0", "COCO_val2014_000000000001", "COCO_val2014_000000000002"});
    EXPECT_EQ(b.shape(), (Shape{3, 2, 3}));
    EXPECT_TRUE(test::all_close(select(b, 0, 0), v[2], tol, tol));
    EXPECT_TRUE(test::all_close(select(b, 0, 1), v[0], tol, tol));
    EXPECT_TRUE(test::all_close(select(b, 0, 2), v[1], tol, tol));
    // As an image index: the loaders' LoadOptions::images check works on a feature directory.
    EXPECT_TRUE(index.shards.contains("COCO_val2014_000000000002"));
    fs::remove_all(dir);
  }
}

TEST(FeatureShards, ErrorsNameTheFileOrTheId) {
  std::vector<Tensor> v;
  fs::path dir = write_dir("feature_shards_err", DType::F32, &v);
  FeatureShardIndex index = read_feature_shard_index(dir.string());
  EXPECT_NE(error_of([&] { read_image_features(index, {"missing-id"}); }).find("no features for image 'missing-id'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_shard_features(index.shards.path_of.at("dev-1-0-img0"), "COCO_val2014_000000000001"); })
                .find("no tensor for image 'COCO_val2014_000000000001'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_feature_shard_index((dir / "nowhere").string()); }).find("index.json: cannot open"),
            std::string::npos);
  std::ofstream(dir / "index.json") << R"({"format": "something-else", "version": 1})";
  EXPECT_NE(error_of([&] { read_feature_shard_index(dir.string()); }).find("not a vlpeft feature index"),
            std::string::npos);
  std::ofstream(dir / "index.json") << R"({"format": "vlpeft-features", "version": 7, "dtype": "F32"})";
  EXPECT_NE(error_of([&] { read_feature_shard_index(dir.string()); }).find("version 7"), std::string::npos);
  std::ofstream(dir / "index.json") << R"({"format": "vlpeft-features", "version": 1, "dtype": "F32", "shards": [{"file": 3}]})";
  EXPECT_NE(error_of([&] { read_feature_shard_index(dir.string()); }).find("malformed"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace vlp::data
