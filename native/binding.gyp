{
  "targets": [
    {
      "target_name": "usernet",
      "sources": [
        "src/addon.c",
        "src/util.c",
        "src/netns.c",
        "src/fd.c",
        "src/poll.c",
        "src/io.c",
        "src/tap.c",
        "src/unix.c",
        "src/mem.c",
        "src/sock.c",
        "src/tcpstream.c"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
      "cflags!": ["-fno-exceptions"],
      "conditions": [
        ["OS!='linux'", { "type": "none" }]
      ]
    }
  ]
}
