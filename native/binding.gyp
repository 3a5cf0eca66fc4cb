{
  "targets": [
    {
      "target_name": "selfsup_native",
      "sources": [
        "src/addon.cc",
        "src/conv.cc",
        "src/matmul.cc",
        "src/batchnorm.cc",
        "src/pool.cc",
        "src/eltwise.cc",
        "src/reduce.cc",
        "src/layout.cc",
        "src/roi_align.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "/usr/include/oneapi"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-march=native", "-fopenmp", "-fexceptions", "-Wall", "-Wno-unused-parameter"],
      "libraries": ["-ldnnl", "-fopenmp"]
    }
  ]
}
