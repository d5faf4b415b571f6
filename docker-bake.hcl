# Build the three images the same way:  docker buildx bake            (all three)
#                                       docker buildx bake cuda       (one)
#   REGISTRY=registry.example.com/edgeblur VERSION=0.1.0 REVISION=$(git rev-parse HEAD) \
#   SOURCE_URL=$(git remote get-url origin) docker buildx bake --push
#
# Tags, for VERSION 0.1.0:
#   REGISTRY:0.1.0-cpu    REGISTRY:cpu      x86_64, ONNX Runtime on the CPU (Dockerfile, VARIANT=cpu)
#   REGISTRY:0.1.0-cuda   REGISTRY:cuda     x86_64, TensorRT 10 + CUDA 12 (Dockerfile, VARIANT=cuda)
#   REGISTRY:0.1.0-jetson REGISTRY:jetson   arm64, JetPack 6 / L4T r36 (Dockerfile.jetson)
# The moving tags (cpu, cuda, jetson) follow the last build; deploy the versioned ones.
# VERSION must match pyproject.toml's version (tests/unit/test_deploy_files.py checks it).

variable "REGISTRY" {
  default = "edgeblur"
}
variable "VERSION" {
  default = "0.1.0"
}
variable "REVISION" {
  default = ""
}
variable "SOURCE_URL" {
  default = ""
}

group "default" {
  targets = ["cpu", "cuda", "jetson"]
}

target "_common" {
  context = "."
  args = {
    VERSION    = VERSION
    REVISION   = REVISION
    SOURCE_URL = SOURCE_URL
  }
}

target "cpu" {
  inherits   = ["_common"]
  dockerfile = "Dockerfile"
  platforms  = ["linux/amd64"]
  args       = { VARIANT = "cpu" }
  tags       = ["${REGISTRY}:${VERSION}-cpu", "${REGISTRY}:cpu"]
}

target "cuda" {
  inherits   = ["_common"]
  dockerfile = "Dockerfile"
  platforms  = ["linux/amd64"]
  args       = { VARIANT = "cuda" }
  tags       = ["${REGISTRY}:${VERSION}-cuda", "${REGISTRY}:cuda"]
}

# The models stage runs on the build machine's platform ($BUILDPLATFORM): no torch emulation.
target "jetson" {
  inherits   = ["_common"]
  dockerfile = "Dockerfile.jetson"
  platforms  = ["linux/arm64"]
  tags       = ["${REGISTRY}:${VERSION}-jetson", "${REGISTRY}:jetson"]
}
