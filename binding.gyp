{
  "target_defaults": {
    "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-fstack-protector-strong", "-fvisibility=hidden", "-O2"],
    "defines": []
  },
  "targets": [
    {
      "target_name": "appswitch",
      "sources": ["native/addon.cc", "native/scm_rights.c", "native/sockdiag.c", "native/sockguard.c", "native/statelock.c", "native/dtab.c", "native/sklookup.c", "native/taskfd.c", "native/preamble.c", "native/mac.c"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-fvisibility=hidden"]
    },
    {
      "target_name": "appswitch-launcher",
      "type": "executable",
      "sources": [
        "native/launcher.c", "native/caps.c", "native/gen_loop.c", "native/gen_daemon.c", "native/gen_pending.c",
        "native/gen_sock.c", "native/gen_names.c", "native/gen_bind.c", "native/gen_connect.c", "native/gen_accept.c",
        "native/gen_udp_send.c", "native/gen_fast.c", "native/gen_offer.c", "native/gen_decide.c", "native/gen_ingress.c", "native/gen_preamble.c", "native/gen_hot.c", "native/preamble.c", "native/mac.c", "native/udp_recv.c", "native/seccomp_filter.c", "native/notif.c",
        "native/scm_rights.c", "native/procmem.c", "native/vmap.c", "native/peermap.c", "native/fastpath.c", "native/fd_inspect.c", "native/session.c", "native/trapstats.c",
        "native/sockguard.c", "native/sockopt_emul.c", "native/dtab.c", "native/offer_chan.c",
        "native/caller.c"
      ],
      "cflags_c": ["-std=gnu11"]
    },
    {
      "target_name": "appswitch-relay",
      "type": "executable",
      "sources": [
        "native/relay_main.c", "native/relay_wire.c", "native/relay_listen.c", "native/relay_connect.c",
        "native/relay_splice.c", "native/dtab.c", "native/vmap.c", "native/preamble.c", "native/mac.c"
      ],
      "cflags_c": ["-std=gnu11"]
    }
  ]
}
