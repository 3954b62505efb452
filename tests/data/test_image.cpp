// Images: PIL-exact resampling against Pillow fixtures (tests/fixtures/data/image_reference.*, made by
// tools/reference/make_image_fixtures.py), the CLIP / VL-Adapter / ViT pipelines on the three asset photos,
// crop offsets, normalisation constants, RGB conversion of gray/alpha/palette PNGs, and decode errors.
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "data/image.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace vlp {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

struct Fixture {
  json meta;
  std::vector<uint8_t> blob;

  // The uint8 block a {"offset", "shape": [h, w, 3]} record points to, as an Image.
  Image image(const json& ref) const {
    const int h = ref["shape"][0], w = ref["shape"][1];
    const size_t off = ref["offset"], n = size_t(h) * w * ref["shape"][2].get<int>();
    EXPECT_LE(off + n, blob.size());
    Image im{w, h, {}};
    im.pixels.assign(blob.begin() + off, blob.begin() + off + n);
    return im;
  }
};

const Fixture& fixture() {
  static const Fixture f = [] {
    const fs::path dir = fs::path(VLP_SOURCE_DIR) / "tests" / "fixtures" / "data";
    Fixture fx;
    std::ifstream in(dir / "image_reference.json");
    fx.meta = json::parse(in);
    fx.blob = read_bytes(dir / fx.meta["binary"].get<std::string>());
    return fx;
  }();
  return f;
}

std::string photos_dir() {
  const std::string assets = test::assets_dir();
  return assets.empty() ? std::string() : assets + "/images";
}

#define SKIP_WITHOUT_ASSETS()                                                                        \
  if (photos_dir().empty() || !fs::exists(photos_dir()))                                            \
  GTEST_SKIP() << "test assets not found (../shared/assets or $VLP_ASSETS); skipping the photo tests"

// Largest per-byte difference and how many bytes differ at all.
struct Diff {
  int max = 0;
  size_t differing = 0;
};
Diff compare(const Image& a, const Image& b) {
  Diff d;
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  if (a.pixels.size() != b.pixels.size()) return Diff{999, a.pixels.size()};
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const int e = std::abs(int(a.pixels[i]) - int(b.pixels[i]));
    d.max = std::max(d.max, e);
    d.differing += e != 0;
  }
  return d;
}

Image crop(const Image& im, int x0, int y0, int w, int h) {
  Image out{w, h, std::vector<uint8_t>(size_t(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w * 3; ++x) out.pixels[(size_t(y) * w) * 3 + x] = im.pixels[(size_t(y + y0) * im.width + x0) * 3 + x];
  return out;
}

Image subsample16(const Image& im) {  // every 16th row and column, as the fixture's samples
  Image out{(im.width + 15) / 16, (im.height + 15) / 16, {}};
  for (int y = 0; y < im.height; y += 16)
    for (int x = 0; x < im.width; x += 16)
      for (int c = 0; c < 3; ++c) out.pixels.push_back(im.at(x, y, c));
  return out;
}

uint64_t fnv1a64(const std::vector<uint8_t>& bytes) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (uint8_t b : bytes) h = (h ^ b) * 0x100000001B3ull;
  return h;
}

Resample filter_named(const std::string& name) { return name == "bicubic" ? Resample::Bicubic : Resample::Bilinear; }

// ---- resampling --------------------------------------------------------------------------------------

// Runs on the PIL-decoded blocks stored in the fixture, so it needs no assets and must match exactly.
TEST(ImageResize, MatchesPillowExactlyOnStoredBlocks) {
  const Fixture& fx = fixture();
  int cases = 0;
  for (const auto& [name, rec] : fx.meta["photos"].items()) {
    const Image block = fx.image(rec["crop"]["pixels"]);
    const Image corner = crop(block, 0, 0, 16, 12);
    for (const auto& c : rec["resize"]) {
      if (c["input"] == "full") continue;
      const Image& src = c["input"] == "crop" ? block : corner;
      const Image got = resize(src, c["size"][0], c["size"][1], filter_named(c["filter"]));
      const Diff d = compare(got, fx.image(c["pixels"]));
      EXPECT_EQ(d.max, 0) << name << " " << c["filter"] << " " << c["kind"] << ": " << d.differing << " bytes differ";
      ++cases;
    }
  }
  EXPECT_EQ(cases, 3 * 2 * 6);
}

TEST(ImageResize, FullPhotosMatchPillow) {
  SKIP_WITHOUT_ASSETS();
  const Fixture& fx = fixture();
  for (const auto& [name, rec] : fx.meta["photos"].items()) {
    const Image photo = load_image(photos_dir() + "/" + name);
    const bool jpeg = name.ends_with(".jpg");
    for (const auto& c : rec["resize"]) {
      if (c["input"] != "full") continue;
      const Diff d = compare(resize(photo, c["size"][0], c["size"][1], filter_named(c["filter"])), fx.image(c["pixels"]));
      // PNG decodes identically, so the result is exact; the JPEG decoders differ slightly (see JpegDecode).
      EXPECT_LE(d.max, jpeg ? 1 : 0) << name << " " << c["filter"] << ": " << d.differing << " bytes differ";
    }
  }
}

TEST(ImageResize, ConstantImageStaysConstantAndIdentityIsACopy) {
  Image flat{31, 17, std::vector<uint8_t>(31 * 17 * 3)};
  for (size_t i = 0; i < flat.pixels.size(); ++i) flat.pixels[i] = uint8_t(i % 3 == 0 ? 200 : i % 3 == 1 ? 7 : 128);
  for (Resample f : {Resample::Bicubic, Resample::Bilinear}) {
    for (auto [w, h] : std::vector<std::pair<int, int>>{{5, 3}, {64, 40}, {31, 80}, {7, 17}, {1, 1}}) {
      const Image r = resize(flat, w, h, f);
      ASSERT_EQ(r.pixels.size(), size_t(w) * h * 3);
      for (int i = 0; i < w * h; ++i) {
        ASSERT_EQ(r.pixels[i * 3 + 0], 200);
        ASSERT_EQ(r.pixels[i * 3 + 1], 7);
        ASSERT_EQ(r.pixels[i * 3 + 2], 128);
      }
    }
  }
  Image ramp{4, 2, {}};
  for (int i = 0; i < 24; ++i) ramp.pixels.push_back(uint8_t(i * 10));
  EXPECT_EQ(resize(ramp, 4, 2, Resample::Bicubic).pixels, ramp.pixels);
  EXPECT_THROW(resize(ramp, 0, 2, Resample::Bicubic), Error);
}

// Bicubic overshoot is clipped: a hard 0/255 edge upscaled gives values only in [0, 255] with both ends hit.
TEST(ImageResize, BicubicOvershootIsClipped) {
  Image edge{4, 1, {0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255}};
  const Image up = resize(edge, 16, 1, Resample::Bicubic);
  EXPECT_EQ(*std::min_element(up.pixels.begin(), up.pixels.end()), 0);
  EXPECT_EQ(*std::max_element(up.pixels.begin(), up.pixels.end()), 255);
  // Monotone interior apart from the clipped lobes.
  EXPECT_LT(up.at(7, 0, 0), up.at(9, 0, 0));
}

// ---- pipelines ---------------------------------------------------------------------------------------

TEST(ImagePipelines, MatchPillowOnThePhotos) {
  SKIP_WITHOUT_ASSETS();
  const Fixture& fx = fixture();
  for (const auto& [name, rec] : fx.meta["photos"].items()) {
    const Image photo = load_image(photos_dir() + "/" + name);
    ASSERT_EQ(photo.width, rec["size"][0].get<int>()) << name;
    ASSERT_EQ(photo.height, rec["size"][1].get<int>()) << name;
    const bool jpeg = name.ends_with(".jpg");
    const auto& p = rec["pipelines"];
    const auto [rw, rh] = shorter_side_resize_size(photo.width, photo.height, 224);
    EXPECT_EQ(rw, p["clip"]["resized_size"][0].get<int>()) << name;
    EXPECT_EQ(rh, p["clip"]["resized_size"][1].get<int>()) << name;
    EXPECT_EQ(center_crop_offset(rh, 224), p["clip"]["crop_top"].get<int>()) << name;
    EXPECT_EQ(center_crop_offset(rw, 224), p["clip"]["crop_left"].get<int>()) << name;

    const std::vector<std::pair<std::string, Image>> outs = {
        {"clip", clip_resize_crop(photo)}, {"vladapter", vladapter_clip_resize(photo)}, {"vit", vit_resize(photo)}};
    for (const auto& [pipe, img] : outs) {
      ASSERT_EQ(img.width, 224);
      ASSERT_EQ(img.height, 224);
      const auto& ref = p[pipe];
      const Diff d = compare(subsample16(img), fx.image(ref["samples_every_16"]));
      int64_t sum = 0;
      for (uint8_t b : img.pixels) sum += b;
      if (!jpeg) {
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(img.pixels)));
        EXPECT_EQ(std::string(hex), ref["fnv1a64"].get<std::string>()) << name << " " << pipe << ": not byte-identical";
        EXPECT_EQ(sum, ref["sum"].get<int64_t>()) << name << " " << pipe;
        EXPECT_EQ(d.max, 0) << name << " " << pipe;
      } else {
        // stb's and libjpeg-turbo's decodes differ by up to 2 levels on ~1% of the bytes (IDCT, chroma
        // upsampling and colour conversion round differently); after resampling about 1% of the output
        // bytes still differ, by at most 2.
        EXPECT_LE(d.max, 2) << name << " " << pipe;
        EXPECT_LE(std::abs(double(sum - ref["sum"].get<int64_t>())) / double(img.pixels.size()), 0.01) << name << " " << pipe;
      }
    }
    // Normalised values (ToTensor + Normalize in float32) at the recorded positions.
    const Tensor t = clip_transform(photo);
    ASSERT_EQ(t.shape(), (Shape{3, 224, 224}));
    ASSERT_EQ(t.dtype(), DType::F32);
    const float* v = t.data<float>();
    for (const auto& q : p["clip"]["normalized"]) {
      const int c = q["c"], y = q["y"], x = q["x"];
      const float expected = q["value"].get<float>();
      const float tol = jpeg ? 1.5f / 255.0f / 0.26f : 1e-6f;
      EXPECT_NEAR(v[(c * 224 + y) * 224 + x], expected, tol) << name << " at " << c << "," << y << "," << x;
    }
    const Tensor vt = vit_transform(photo);
    const Tensor va = vladapter_clip_transform(photo);
    EXPECT_EQ(vt.shape(), (Shape{3, 224, 224}));
    EXPECT_EQ(va.shape(), (Shape{3, 224, 224}));
  }
}

// Our JPEG decode against Pillow's (libjpeg-turbo) on the stored block of rocket.jpg.
TEST(ImageDecode, JpegCloseToPillow) {
  SKIP_WITHOUT_ASSETS();
  const Fixture& fx = fixture();
  const auto& rec = fx.meta["photos"]["rocket.jpg"];
  const Image photo = load_image(photos_dir() + "/rocket.jpg");
  const Image ours = crop(photo, rec["crop"]["x"], rec["crop"]["y"], 40, 30);
  const Diff d = compare(ours, fx.image(rec["crop"]["pixels"]));
  EXPECT_LE(d.max, 2);
  EXPECT_LE(d.differing, ours.pixels.size() / 10);
}

TEST(ImageTransforms, NormalisationConstantsAndLayout) {
  EXPECT_FLOAT_EQ(kClipNormalization.mean[0], 0.48145466f);
  EXPECT_FLOAT_EQ(kClipNormalization.mean[1], 0.4578275f);
  EXPECT_FLOAT_EQ(kClipNormalization.mean[2], 0.40821073f);
  EXPECT_FLOAT_EQ(kClipNormalization.std[0], 0.26862954f);
  EXPECT_FLOAT_EQ(kClipNormalization.std[1], 0.26130258f);
  EXPECT_FLOAT_EQ(kClipNormalization.std[2], 0.27577711f);
  // A 2x1 image: pixel (0,0) = (0, 128, 255), pixel (1,0) = (255, 0, 51). CHW layout.
  Image im{2, 1, {0, 128, 255, 255, 0, 51}};
  const Tensor v = to_tensor(im, kVitNormalization);
  EXPECT_EQ(v.shape(), (Shape{3, 1, 2}));
  EXPECT_TRUE(test::values_are(v, {-1, 1, 128 / 255.0 * 2 - 1, -1, 1, 51 / 255.0 * 2 - 1}, 1e-6));
  const Tensor c = to_tensor(im, kClipNormalization);
  const std::vector<double> mean = {0.48145466, 0.4578275, 0.40821073}, std = {0.26862954, 0.26130258, 0.27577711};
  EXPECT_TRUE(test::values_are(c, {(0 - mean[0]) / std[0], (1 - mean[0]) / std[0], (128 / 255.0 - mean[1]) / std[1],
                                   (0 - mean[1]) / std[1], (1 - mean[2]) / std[2], (51 / 255.0 - mean[2]) / std[2]},
                               1e-5));
}

TEST(ImageTransforms, CenterCropOffsetsRoundHalfToEven) {
  EXPECT_EQ(center_crop_offset(224, 224), 0);
  EXPECT_EQ(center_crop_offset(225, 224), 0);  // 0.5 -> 0
  EXPECT_EQ(center_crop_offset(227, 224), 2);  // 1.5 -> 2
  EXPECT_EQ(center_crop_offset(229, 224), 2);  // 2.5 -> 2
  EXPECT_EQ(center_crop_offset(335, 224), 56); // 55.5 -> 56 (rocket.jpg after resizing: 335x224)
  EXPECT_EQ(center_crop_offset(337, 224), 56); // 56.5 -> 56
  EXPECT_EQ(center_crop_offset(336, 224), 56);
  EXPECT_EQ(shorter_side_resize_size(640, 427, 224), (std::pair<int, int>{335, 224}));
  EXPECT_EQ(shorter_side_resize_size(400, 600, 224), (std::pair<int, int>{224, 336}));
  EXPECT_EQ(shorter_side_resize_size(512, 512, 224), (std::pair<int, int>{224, 224}));

  Image im{5, 3, {}};
  for (int i = 0; i < 45; ++i) im.pixels.push_back(uint8_t(i));
  const Image c = center_crop(im, 2, 2);  // left = round(1.5) = 2, top = round(0.5) = 0
  EXPECT_EQ(c.pixels, (std::vector<uint8_t>{6, 7, 8, 9, 10, 11, 21, 22, 23, 24, 25, 26}));
  // Larger than the image: zero padding, (crop - size) // 2 before.
  const Image p = center_crop(im, 8, 4);  // pad left 1, right 2, top 0, bottom 1
  ASSERT_EQ(p.width, 8);
  ASSERT_EQ(p.height, 4);
  EXPECT_EQ(p.at(0, 0, 0), 0);
  EXPECT_EQ(p.at(1, 0, 0), 0);   // first image pixel (value 0)
  EXPECT_EQ(p.at(2, 1, 1), 19);  // image (1, 1), channel 1
  EXPECT_EQ(p.at(6, 3, 2), 0);
}

// ---- decoding: conversion to RGB and errors -------------------------------------------------------------

void append_to_vector(void* ctx, void* data, int size) {
  auto* v = static_cast<std::vector<uint8_t>*>(ctx);
  v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
}

std::vector<uint8_t> encode_png(int w, int h, int channels, const std::vector<uint8_t>& px) {
  std::vector<uint8_t> out;
  EXPECT_NE(stbi_write_png_to_func(append_to_vector, &out, w, h, channels, px.data(), w * channels), 0);
  return out;
}

std::vector<uint8_t> encode_jpeg(int w, int h, int channels, const std::vector<uint8_t>& px) {
  std::vector<uint8_t> out;
  EXPECT_NE(stbi_write_jpg_to_func(append_to_vector, &out, w, h, channels, px.data(), 95), 0);
  return out;
}

TEST(ImageDecode, GrayAndAlphaConvertLikePilRgb) {
  // Gray (L): replicated to R = G = B.
  std::vector<uint8_t> png = encode_png(3, 2, 1, {0, 10, 20, 30, 40, 255});
  Image gray = decode_image(png.data(), png.size(), "gray.png");
  ASSERT_EQ(gray.width, 3);
  ASSERT_EQ(gray.height, 2);
  EXPECT_EQ(gray.pixels, (std::vector<uint8_t>{0, 0, 0, 10, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40, 255, 255, 255}));
  // Gray + alpha (LA): gray replicated, alpha dropped.
  png = encode_png(2, 1, 2, {77, 0, 200, 128});
  EXPECT_EQ(decode_image(png.data(), png.size(), "la.png").pixels, (std::vector<uint8_t>{77, 77, 77, 200, 200, 200}));
  // RGBA: alpha dropped without compositing (a fully transparent pixel keeps its colour).
  png = encode_png(2, 1, 4, {1, 2, 3, 0, 250, 251, 252, 99});
  EXPECT_EQ(decode_image(png.data(), png.size(), "rgba.png").pixels, (std::vector<uint8_t>{1, 2, 3, 250, 251, 252}));
  // RGB passes through.
  png = encode_png(1, 2, 3, {9, 8, 7, 6, 5, 4});
  EXPECT_EQ(decode_image(png.data(), png.size(), "rgb.png").pixels, (std::vector<uint8_t>{9, 8, 7, 6, 5, 4}));
  // Grayscale JPEG: three equal channels.
  std::vector<uint8_t> gpx(16 * 16);
  for (int i = 0; i < 256; ++i) gpx[i] = uint8_t(i);
  std::vector<uint8_t> jpg = encode_jpeg(16, 16, 1, gpx);
  const Image gj = decode_image(jpg.data(), jpg.size(), "gray.jpg");
  ASSERT_EQ(gj.pixels.size(), 16u * 16 * 3);
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(gj.pixels[i * 3], gj.pixels[i * 3 + 1]);
    EXPECT_EQ(gj.pixels[i * 3], gj.pixels[i * 3 + 2]);
    EXPECT_NEAR(gj.pixels[i * 3], gpx[i], 8);
  }
}

// Each error names the file and says what is wrong.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& part : parts) EXPECT_NE(msg.find(part), std::string::npos) << "message: " << msg << "\nmissing: " << part;
  }
}

TEST(ImageDecode, ErrorsNameTheFile) {
  const fs::path dir = test::temp_dir("image_errors");
  expect_error([&] { load_image((dir / "nope.jpg").string()); }, {"nope.jpg", "cannot open"});

  // A valid JPEG (made here), then cut in half: truncated.
  std::vector<uint8_t> px(32 * 24 * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t((i * 37) % 251);
  const std::vector<uint8_t> jpg = encode_jpeg(32, 24, 3, px);
  write_bytes(dir / "ok.jpg", jpg);
  EXPECT_EQ(load_image((dir / "ok.jpg").string()).width, 32);
  write_bytes(dir / "half.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() / 2));
  expect_error([&] { load_image((dir / "half.jpg").string()); }, {"half.jpg", "truncated"});
  // Header only.
  write_bytes(dir / "stub.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + 3));
  expect_error([&] { load_image((dir / "stub.jpg").string()); }, {"stub.jpg", "JPEG"});
  // Garbage after a JPEG signature.
  std::vector<uint8_t> junk = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10};
  for (int i = 0; i < 200; ++i) junk.push_back(uint8_t(i * 7));
  write_bytes(dir / "junk.jpg", junk);
  expect_error([&] { load_image((dir / "junk.jpg").string()); }, {"junk.jpg", "JPEG"});
  // A JPEG whose headers are intact but whose frame header is damaged: stb reports it.
  std::vector<uint8_t> bad = jpg;
  for (size_t i = 2; i + 1 < bad.size(); ++i)
    if (bad[i] == 0xFF && bad[i + 1] == 0xC0) {  // SOF0: zero the precision/size fields
      for (size_t k = i + 4; k < i + 9; ++k) bad[k] = 0;
      break;
    }
  write_bytes(dir / "badsof.jpg", bad);
  expect_error([&] { load_image((dir / "badsof.jpg").string()); }, {"badsof.jpg", "corrupt"});

  // PNG: truncated, and a flipped byte (CRC mismatch).
  const std::vector<uint8_t> png = encode_png(8, 8, 3, std::vector<uint8_t>(8 * 8 * 3, 42));
  write_bytes(dir / "cut.png", std::vector<uint8_t>(png.begin(), png.end() - 20));
  expect_error([&] { load_image((dir / "cut.png").string()); }, {"cut.png", "truncated PNG"});
  std::vector<uint8_t> flipped = png;
  flipped[40] ^= 0x55;
  write_bytes(dir / "flip.png", flipped);
  expect_error([&] { load_image((dir / "flip.png").string()); }, {"flip.png", "corrupt PNG"});

  // Neither JPEG nor PNG.
  write_bytes(dir / "pic.gif", {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0});
  expect_error([&] { load_image((dir / "pic.gif").string()); }, {"pic.gif", "unsupported format"});
  write_bytes(dir / "empty.png", {});
  expect_error([&] { load_image((dir / "empty.png").string()); }, {"empty.png", "empty"});
  fs::remove_all(dir);
}

TEST(ImageDecode, TruncatedAssetJpegFails) {
  SKIP_WITHOUT_ASSETS();
  const std::vector<uint8_t> bytes = read_bytes(photos_dir() + "/rocket.jpg");
  const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + bytes.size() * 3 / 4);
  expect_error([&] { decode_image(cut.data(), cut.size(), "rocket_cut.jpg"); }, {"rocket_cut.jpg", "truncated"});
}

}  // namespace
}  // namespace vlp
