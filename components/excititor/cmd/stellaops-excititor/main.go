// Command stellaops-excititor is the Excititor service of the default bundle, compiled from
// Go by the release pipeline (offline, with the pinned toolchain and the modules go.sum pins).
// Like the shell stand-ins it says its component, version and channel at startup and answers
// a health check on $PORT; it also reports the Go modules it was linked with.
//
//	stellaops-excititor version   print "<component> <version> channel=<channel> ..." and exit
//	stellaops-excititor modules   print the Go version and the modules of this program
//	stellaops-excititor health    ask the running service for /healthz (the image's HEALTHCHECK)
//	stellaops-excititor serve     print the version line, then serve /healthz (the default)
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/google/uuid"
	"github.com/pkg/errors"
)

// info is what the image config tells the program about itself.
type info struct {
	Component string `json:"component"`
	Version   string `json:"version"`
	Channel   string `json:"channel"`
	Release   string `json:"release"`
	Calendar  string `json:"calendar"`
	Instance  string `json:"instance"`
	Status    string `json:"status"`
}

func fromEnv() (info, error) {
	i := info{
		Component: os.Getenv("STELLAOPS_COMPONENT"),
		Version:   os.Getenv("STELLAOPS_VERSION"),
		Channel:   os.Getenv("STELLAOPS_CHANNEL"),
		Release:   os.Getenv("STELLAOPS_RELEASE"),
		Calendar:  os.Getenv("STELLAOPS_CALENDAR"),
		Status:    "ok",
	}
	if i.Component == "" || i.Version == "" {
		return i, errors.New("STELLAOPS_COMPONENT and STELLAOPS_VERSION must be set (the image config sets them)")
	}
	// A stable name for this release of the component, and a random one for this process.
	release := uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://stella-ops.org/"+i.Component+"/"+i.Version))
	i.Instance = release.String() + "/" + uuid.New().String()
	return i, nil
}

func (i info) line() string {
	return fmt.Sprintf("%s %s channel=%s release=%q calendar=%s", i.Component, i.Version, i.Channel, i.Release, i.Calendar)
}

func port() string {
	if p := os.Getenv("PORT"); p != "" {
		return p
	}
	return "8080"
}

func health() error {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://127.0.0.1:" + port() + "/healthz")
	if err != nil {
		return errors.Wrap(err, "health check")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.Errorf("health check: HTTP %d", resp.StatusCode)
	}
	_, err = io.Copy(os.Stdout, resp.Body)
	return errors.Wrap(err, "health check")
}

func serve(i info) error {
	fmt.Println(i.line())
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(i)
	})
	fmt.Printf("%s: serving health on :%s\n", i.Component, port())
	return errors.Wrap(http.ListenAndServe(":"+port(), mux), "serve")
}

func modules() error {
	b, ok := debug.ReadBuildInfo()
	if !ok {
		return errors.New("no build information in this program")
	}
	fmt.Println(b.GoVersion)
	for _, d := range b.Deps {
		fmt.Printf("%s %s\n", d.Path, d.Version)
	}
	return nil
}

func run(args []string) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "modules":
		return modules()
	case "health":
		return health()
	}
	i, err := fromEnv()
	if err != nil {
		return err
	}
	switch cmd {
	case "version":
		fmt.Println(i.line())
		return nil
	case "serve":
		return serve(i)
	}
	return errors.Errorf("usage: stellaops-excititor [version|modules|health|serve], not %q", cmd)
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "stellaops-excititor:", err)
		os.Exit(1)
	}
}
