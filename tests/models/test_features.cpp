// Feature extraction (models/features): a frozen tiny ViT / CLIP tower (the transformers fixtures) over images
// into shards; stored features equal the tower's own outputs; resuming skips finished shards; settings mismatches,
// loader failures and bad ids are errors naming what is wrong; real image files through data/image.h.
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "data/image.h"
#include "models/checkpoint.h"
#include "runtime/safetensors.h"
#include "models/features.h"

namespace vlp {
namespace {

namespace fs = std::filesystem;

const std::string kFixtures = std::string(VLP_SOURCE_DIR) + "/tests/fixtures/models";

// Images are random tensors named by path; the loader counts its calls and can be told to fail on one path.
struct FakeImages {
  std::map<std::string, Tensor> by_path;
  std::map<std::string, int> loads;
  std::string fail_on;
  std::vector<ImageRef> refs(int n, int64_t size = 32, uint64_t seed = 1) {
    std::vector<ImageRef> out;
    for (int i = 0; i < n; ++i) {
      std::string path = "img" + std::to_string(i) + ".png";
      if (!by_path.count(path)) by_path[path] = test::rand_input({3, size, size}, seed + uint64_t(i), DType::F32, false);
      out.push_back({"id" + std::to_string(100 + i), path});
    }
    return out;
  }
  ImageLoader loader() {
    return [this](const std::string& path) {
      ++loads[path];
      VLP_CHECK(path != fail_on, "cannot decode ", path);
      return by_path.at(path);
    };
  }
};

// The tower on one image alone: what the store must hold for it.
Tensor expected_features(const VisionTower& tower, const Tensor& image, const FeatureOptions& o) {
  NoGradGuard no_grad;
  return select(image_features(tower.forward(unsqueeze(image, 0)), o), 0, 0);
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Features, StoresWhatTheTowerComputes) {
  auto vit = load_vit_model(kFixtures + "/vit/base");
  VisionTower tower = frozen_tower(*vit);
  FakeImages images;
  auto refs = images.refs(5);
  for (FeatureKind kind : {FeatureKind::Patches, FeatureKind::Grid, FeatureKind::Pooled}) {
    fs::path dir = test::temp_dir(std::string("features_") + feature_kind_name(kind));
    FeatureOptions o;
    o.kind = kind;
    o.grid_h = o.grid_w = 3;  // 4 x 4 patches max-pooled to 3 x 3
    o.shard_size = 2;
    o.batch_size = 2;
    std::vector<int64_t> progress;
    o.progress = [&](int64_t done, int64_t total) {
      EXPECT_EQ(total, 5);
      progress.push_back(done);
    };
    ExtractionReport r = extract_features(tower, refs, images.loader(), dir.string(), o);
    EXPECT_EQ(r.images, 5);
    EXPECT_EQ(r.shards, 3);
    EXPECT_EQ(r.shards_skipped, 0);
    EXPECT_EQ(r.images_extracted, 5);
    EXPECT_EQ(progress, (std::vector<int64_t>{2, 4, 5}));
    EXPECT_EQ(files_in(dir), (std::vector<std::string>{"features-00000.safetensors", "features-00001.safetensors",
                                                       "features-00002.safetensors", "index.json"}));
    FeatureStore store(dir.string());
    EXPECT_EQ(store.size(), 5);
    EXPECT_EQ(store.tower(), "vit");
    EXPECT_EQ(store.kind(), kind);
    Shape shape = kind == FeatureKind::Patches ? Shape{16, 24} : kind == FeatureKind::Grid ? Shape{9, 24} : Shape{24};
    EXPECT_EQ(store.feature_shape(), shape);
    for (const auto& ref : refs) {
      ASSERT_TRUE(store.contains(ref.id));
      Tensor expected = expected_features(tower, images.by_path[ref.path], o);
      EXPECT_TRUE(test::all_close(store.get(ref.id), expected, 1e-5, 1e-5)) << ref.id << " " << feature_kind_name(kind);
    }
    Tensor b = store.batch({"id104", "id100"});
    Shape bs{2};
    bs.insert(bs.end(), shape.begin(), shape.end());
    EXPECT_EQ(b.shape(), bs);
    EXPECT_TRUE(test::all_close(select(b, 0, 1), store.get("id100"), 0, 0));
    fs::remove_all(dir);
  }
}

TEST(Features, PooledIsTheTowersPooledOutput) {
  auto vit = load_vit_model(kFixtures + "/vit/base");
  auto clip = load_clip_vision_model(kFixtures + "/clip_vision");
  FakeImages images;
  auto refs = images.refs(3);
  Tensor batch = stack({images.by_path[refs[0].path], images.by_path[refs[1].path], images.by_path[refs[2].path]}, 0);
  fs::path dir = test::temp_dir("features_pooled");
  FeatureOptions o;
  o.kind = FeatureKind::Pooled;
  extract_features(frozen_tower(*vit), refs, images.loader(), (dir / "vit").string(), o);
  o.kind = FeatureKind::Projected;
  extract_features(frozen_tower(*clip, "clip"), refs, images.loader(), (dir / "clip").string(), o);
  FeatureStore vit_store((dir / "vit").string()), clip_store((dir / "clip").string());
  VisionOutput v = vit->forward(batch);
  VisionOutput c = clip->forward(batch);
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(test::all_close(vit_store.get(refs[size_t(i)].id), select(v.pooler_output, 0, i), 1e-5, 1e-6));
    EXPECT_TRUE(test::all_close(clip_store.get(refs[size_t(i)].id), select(c.image_embeds, 0, i), 1e-5, 1e-6));
  }
  // A tower without a projection cannot give projected features.
  ViTModel no_pooler(vit->config, false);
  EXPECT_THROW(extract_features(frozen_tower(no_pooler), refs, images.loader(), (dir / "bad").string(), o), Error);
  fs::remove_all(dir);
}

TEST(Features, ResumesFromFinishedShards) {
  auto vit = load_vit_model(kFixtures + "/vit/base");
  VisionTower tower = frozen_tower(*vit);
  FakeImages images;
  auto refs = images.refs(7);
  fs::path dir = test::temp_dir("features_resume");
  FeatureOptions o;
  o.shard_size = 3;
  o.grid_h = o.grid_w = 2;

  // The loader fails in the middle of shard 1: shard 0 is written and indexed, nothing of shard 1 appears.
  images.fail_on = refs[4].path;
  try {
    extract_features(tower, refs, images.loader(), dir.string(), o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'id104'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot decode img4.png"), std::string::npos) << e.what();
  }
  EXPECT_EQ(files_in(dir), (std::vector<std::string>{"features-00000.safetensors", "index.json"}));
  EXPECT_EQ(FeatureStore(dir.string()).size(), 3);

  // Resumed: shard 0 is not recomputed (its images are not even loaded).
  images.fail_on.clear();
  images.loads.clear();
  ExtractionReport r = extract_features(tower, refs, images.loader(), dir.string(), o);
  EXPECT_EQ(r.shards, 3);
  EXPECT_EQ(r.shards_skipped, 1);
  EXPECT_EQ(r.images_extracted, 4);
  EXPECT_EQ(images.loads.count(refs[0].path), 0u);
  EXPECT_EQ(images.loads[refs[6].path], 1);

  // A shard written but not yet indexed (a crash between the two) is recognised from its contents; a damaged one
  // is extracted again.
  nlohmann::json index = nlohmann::json::parse(std::ifstream(dir / "index.json"));
  index["shards"].erase(1);
  std::ofstream(dir / "index.json") << index.dump();
  std::ofstream(dir / "features-00002.safetensors") << "garbage";
  images.loads.clear();
  r = extract_features(tower, refs, images.loader(), dir.string(), o);
  EXPECT_EQ(r.shards_skipped, 2);
  EXPECT_EQ(r.images_extracted, 1);
  EXPECT_EQ(images.loads.size(), 1u);
  FeatureStore store(dir.string());
  EXPECT_EQ(store.size(), 7);
  EXPECT_TRUE(test::all_close(store.get("id106"), expected_features(tower, images.by_path[refs[6].path], o), 1e-5, 1e-5));
  for (const auto& f : files_in(dir)) EXPECT_EQ(f.find(".tmp"), std::string::npos) << f;

  // A longer list later: the finished shards stay, the new images go to new shards.
  auto more = images.refs(9);
  images.loads.clear();
  r = extract_features(tower, more, images.loader(), dir.string(), o);
  EXPECT_EQ(r.shards_skipped, 2);  // shard 2 now holds ids 106..108: extracted again
  EXPECT_EQ(r.images_extracted, 3);
  EXPECT_EQ(FeatureStore(dir.string()).size(), 9);
  fs::remove_all(dir);
}

TEST(Features, SettingsAndInputErrors) {
  auto vit = load_vit_model(kFixtures + "/vit/base");
  VisionTower tower = frozen_tower(*vit);
  FakeImages images;
  auto refs = images.refs(2);
  fs::path dir = test::temp_dir("features_errors");
  FeatureOptions o;
  o.kind = FeatureKind::Pooled;
  extract_features(tower, refs, images.loader(), dir.string(), o);
  auto fails_with = [&](const VisionTower& t, const std::vector<ImageRef>& r, const FeatureOptions& opt,
                        const std::vector<std::string>& needles) {
    try {
      extract_features(t, r, images.loader(), dir.string(), opt);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
  };
  FeatureOptions grid = o;
  grid.kind = FeatureKind::Grid;
  fails_with(tower, refs, grid, {"kind", "\"pooled\"", "\"grid\"", dir.string()});
  FeatureOptions half = o;
  half.dtype = DType::F16;
  fails_with(tower, refs, half, {"dtype"});
  fails_with(frozen_tower(*vit, "other-vit"), refs, o, {"tower"});
  auto dup = refs;
  dup.push_back({refs[0].id, "elsewhere.png"});
  fails_with(tower, dup, o, {"'id100'", "img0.png", "elsewhere.png"});
  fails_with(tower, {{"", "x.png"}}, o, {"empty"});
  // The same id twice with the same path is extracted once.
  auto same = refs;
  same.push_back(refs[1]);
  EXPECT_EQ(extract_features(tower, same, images.loader(), dir.string(), o).images, 2);

  FeatureStore store(dir.string());
  try {
    store.get("id999");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'id999'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(FeatureStore((dir / "nowhere").string()), Error);
  fs::remove_all(dir);
}

TEST(Features, HalfPrecisionStorage) {
  auto clip = load_clip_vision_model(kFixtures + "/clip_vision");
  VisionTower tower = frozen_tower(*clip, "clip");
  FakeImages images;
  auto refs = images.refs(3);
  fs::path dir = test::temp_dir("features_f16");
  FeatureOptions o;
  o.kind = FeatureKind::Patches;
  o.dtype = DType::F16;
  extract_features(tower, refs, images.loader(), dir.string(), o);
  FeatureStore store(dir.string());
  EXPECT_EQ(store.dtype(), DType::F16);
  auto raw = load_safetensors((dir / "features-00000.safetensors").string());
  EXPECT_EQ(raw.tensors[0].second.dtype(), DType::F16);
  Tensor got = store.get("id101");
  EXPECT_EQ(got.dtype(), DType::F32);
  EXPECT_TRUE(test::all_close(got, expected_features(tower, images.by_path[refs[1].path], o), 1e-3, 1e-3));
  fs::remove_all(dir);
}

TEST(Features, RealImagesThroughTheViTTransform) {
  const std::string assets = test::assets_dir();
  if (assets.empty()) GTEST_SKIP() << "test assets not found (../shared/assets or $VLP_ASSETS)";
  auto vit = load_vit_model(kFixtures + "/vit/base");  // 32 x 32 images: the ViT transform at size 32
  VisionTower tower = frozen_tower(*vit);
  std::vector<ImageRef> refs = {{"astronaut", assets + "/images/astronaut.png"},
                                {"coffee", assets + "/images/coffee.png"},
                                {"rocket", assets + "/images/rocket.jpg"}};
  ImageLoader load = [](const std::string& path) { return vit_transform(load_image(path), 32); };
  fs::path dir = test::temp_dir("features_real");
  FeatureOptions o;
  o.kind = FeatureKind::Pooled;
  o.batch_size = 3;
  extract_features(tower, refs, load, dir.string(), o);
  FeatureStore store(dir.string());
  for (const auto& r : refs) {
    Tensor pixels = load(r.path);
    EXPECT_EQ(pixels.shape(), (Shape{3, 32, 32}));
    EXPECT_TRUE(test::all_close(store.get(r.id), expected_features(tower, pixels, o), 1e-5, 1e-5)) << r.id;
  }
  EXPECT_FALSE(test::all_close(store.get("astronaut"), store.get("coffee"), 1e-2, 1e-2));
  // A missing file is an error naming the image.
  try {
    extract_features(tower, {{"gone", assets + "/images/none.png"}}, load, (dir / "x").string(), o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'gone'"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace vlp
