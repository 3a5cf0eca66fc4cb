{
  "targets": [
    {
      "target_name": "selfsup_mpi",
      "sources": ["src/mpi_addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["OMPI_SKIP_MPICXX=1", "MPICH_SKIP_MPICXX=1", "NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O2", "-fexceptions", "-Wall", "-Wno-unused-parameter", "<!@(pkg-config --cflags mpi)"],
      "libraries": ["<!@(pkg-config --libs mpi)"]
    }
  ]
}
