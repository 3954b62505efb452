// Images for the vision encoders (data.md section 5): decoding JPEG/PNG to 8-bit RGB, resampling exactly as
// PIL's Image.resize does (BICUBIC and BILINEAR), torchvision's centre crop, and conversion to a normalised
// float CHW tensor. The named pipelines at the end are the ones the models are trained with.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace vlp {

// An 8-bit RGB image, rows top to bottom, pixels interleaved: pixels[(y * width + x) * 3 + c].
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;

  uint8_t at(int x, int y, int c) const { return pixels[(size_t(y) * width + x) * 3 + c]; }
};

// Decodes a JPEG or PNG file to RGB like PIL's Image.open(path).convert("RGB"): grayscale is replicated,
// alpha dropped, palettes expanded; EXIF orientation is ignored. Throws naming the file when it is
// missing, not a JPEG/PNG, truncated or corrupt.
Image load_image(const std::string& path);
// The same from bytes in memory; `name` is used in error messages.
Image decode_image(const uint8_t* data, size_t size, const std::string& name);

enum class Resample { Bilinear, Bicubic };

// PIL's Image.resize(size, BILINEAR | BICUBIC) on an RGB image (Pillow 13): separable, one pass into an
// 8-bit image, then the other (horizontal first unless the height shrinks by more than twice as many
// pixels as the width); the filter support is widened by the scale factor when downscaling
// (antialiasing); coefficients normalised to sum 1 and rounded to 22-bit fixed point; results rounded and
// clipped to 0..255 after each pass. Bicubic uses a = -0.5.
Image resize(const Image& image, int width, int height, Resample filter);

// torchvision's center_crop: zero-pads when the image is smaller than the crop, then crops at offsets
// round((H - height) / 2), round((W - width) / 2), rounding halves to even.
Image center_crop(const Image& image, int width, int height);
// The (top, left) offsets center_crop uses for an image at least as large as the crop.
int center_crop_offset(int image_size, int crop_size);

// Per-channel normalisation applied after x = byte / 255.
struct Normalization {
  float mean[3];
  float std[3];
};
inline constexpr Normalization kClipNormalization{{0.48145466f, 0.4578275f, 0.40821073f},
                                                   {0.26862954f, 0.26130258f, 0.27577711f}};
inline constexpr Normalization kVitNormalization{{0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};

// A [3, H, W] F32 tensor with (byte / 255 - mean[c]) / std[c], computed in float as torchvision's
// ToTensor + Normalize do.
Tensor to_tensor(const Image& image, const Normalization& norm);

// The output size of torchvision's Resize(size) (an int): the shorter side becomes `size`, the longer
// floor(size * long / short). Returns {width, height}.
std::pair<int, int> shorter_side_resize_size(int width, int height, int size);

// CLIP (data.md 5.2): shorter side to `size` bicubic, centre crop size x size, CLIP mean/std.
Tensor clip_transform(const Image& image, int size = 224);
// VL-Adapter's feature-extraction variant: both sides to `size` bicubic (aspect not kept), CLIP mean/std.
Tensor vladapter_clip_transform(const Image& image, int size = 224);
// ViT in21k (data.md 5.3): size x size bilinear (aspect not kept), mean = std = 0.5.
Tensor vit_transform(const Image& image, int size = 224);

// The 8-bit images the transforms above normalise (for tests and for caching preprocessed images).
Image clip_resize_crop(const Image& image, int size = 224);
Image vladapter_clip_resize(const Image& image, int size = 224);
Image vit_resize(const Image& image, int size = 224);

}  // namespace vlp
