package runtimetest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/geniam/geniam/am/agent/imagetest"
	"github.com/geniam/geniam/am/amtest"
)

// ProgImage builds the test program into an image FROM scratch with the
// docker CLI, saves it and removes it from the engine again, so that the
// archive is loaded for real. It skips the test when there is no docker
// (a failure under GENIAM_REQUIRE_DOCKER=1).
func ProgImage(t *testing.T) []byte {
	t.Helper()
	imagetest.NeedDocker(t, imagetest.Unavailable())
	dir := t.TempDir()
	if err := imagetest.GoStatic(".", "github.com/geniam/geniam/am/agent/testdata/prog", filepath.Join(dir, "prog")); err != nil {
		t.Fatal(err)
	}
	dockerfile := "FROM scratch\nCOPY prog /prog\nENTRYPOINT [\"/prog\"]\nCMD [\"-out\", \"default command\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := "geniam.test/runtimetest:" + randHex(4)
	// Loading the archive tags the image again; this removes it should a
	// failed check leave it behind (nothing when Run removed it).
	t.Cleanup(func() { _ = imagetest.Docker("rmi", tag) })
	im, err := imagetest.Save(dir, tag, filepath.Join(dir, "image.tar"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(im.Tar)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FakeImageConfig is the config of a FakeImage of the test program: its
// entrypoint and its default command, as ProgImage has them.
const FakeImageConfig = `{"config":{"Entrypoint":["/prog"],"Cmd":["-out","default command"]}}`

// FakeImage is a `docker save` archive as small as an image can be (a
// config and a manifest): enough for a runtime that runs no program.
func FakeImage(t testing.TB, config string) []byte {
	t.Helper()
	var buf bytes.Buffer
	amtest.WriteTar(t, &buf, map[string]string{
		"config.json":   config,
		"manifest.json": `[{"Config":"config.json","RepoTags":null,"Layers":[]}]`,
	})
	return buf.Bytes()
}
