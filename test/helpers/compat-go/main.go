// A tiny net/http server for the compatibility suite (test/integration/compat): built with CGO_ENABLED=0, so a
// static Go binary with Go's own resolver and its own socket calls (no libc). It listens the way Go programs
// usually do, on ":PORT" (one dual-stack IPv6 socket), and answers every request with a fixed line and the
// client address it saw.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	addr := ":8080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from go, you are %s\n", r.RemoteAddr)
	})
	log.Printf("listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}
