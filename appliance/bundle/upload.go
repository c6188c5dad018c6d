package bundle

import (
	"context"
	"errors"
	"io"
	"sync"
)

// holdBack is how many final bytes of each image archive Outpost keeps
// until the whole bundle has been verified. Podman's load endpoint spools
// the request body to a file and imports it only once the body is
// complete, so while these bytes are held nothing is imported; if
// verification fails the request is aborted and Podman discards the
// spool. The archive's manifest.json (without which no image can be
// loaded) is its last member and much smaller than this, so even an engine
// that imported while receiving could not load a held-back archive.
const holdBack = 1 << 20

// loadFunc loads one image archive stream and returns the names loaded.
type loadFunc func(ctx context.Context, r io.Reader) ([]string, error)

// upload streams one verified-as-it-goes image archive into the engine,
// holding back the tail until release.
type upload struct {
	img    Image
	size   int64
	pipe   *chanPipe
	sent   int64
	held   []byte
	result chan loadResult
}

type loadResult struct {
	names []string
	err   error
}

// startUpload begins a load request fed by the returned upload.
func startUpload(ctx context.Context, load loadFunc, img Image, size int64) *upload {
	u := &upload{img: img, size: size, pipe: newChanPipe(8), result: make(chan loadResult, 1)}
	go func() {
		names, err := load(ctx, u.pipe)
		// Stop the writer if the engine returned before reading it all.
		u.pipe.closeRead()
		u.result <- loadResult{names: names, err: err}
	}()
	return u
}

// Write passes bytes through to the engine except the last holdBack
// bytes of the archive, which it keeps.
func (u *upload) Write(p []byte) (int, error) {
	n := len(p)
	limit := max(u.size-holdBack, 0)
	if u.sent < limit {
		k := int(min(int64(len(p)), limit-u.sent))
		if err := u.pipe.write(p[:k]); err != nil {
			return 0, err
		}
		u.sent += int64(k)
		p = p[k:]
	}
	if len(p) > 0 {
		u.held = append(u.held, p...)
		u.sent += int64(len(p))
	}
	return n, nil
}

// release sends the held tail and ends the body: the engine now imports.
func (u *upload) release() error {
	if err := u.pipe.write(u.held); err != nil {
		return err
	}
	u.pipe.closeWrite(nil)
	return nil
}

// abort ends the body with err: the engine's request fails and it
// imports nothing.
func (u *upload) abort(err error) {
	u.pipe.closeWrite(err)
}

// wait returns the engine's answer.
func (u *upload) wait() loadResult {
	r := <-u.result
	u.result <- r
	return r
}

// errStoppedReading is what the writer sees when the engine closed its
// end early; the engine's own error says why.
var errStoppedReading = errors.New("podman stopped reading the image archive")

// chanPipe is a pipe with a few chunks of buffer, so hashing the bundle
// and writing to Podman's socket overlap (io.Pipe would run them in
// lockstep).
type chanPipe struct {
	ch    chan []byte
	wdone chan struct{}
	rdone chan struct{}
	wonce sync.Once
	ronce sync.Once
	werr  error // io.EOF or the abort error; set before wdone closes
	cur   []byte
	buf   []byte
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func newChanPipe(n int) *chanPipe {
	return &chanPipe{ch: make(chan []byte, n), wdone: make(chan struct{}), rdone: make(chan struct{})}
}

// write copies p into chunks and queues them.
func (c *chanPipe) write(p []byte) error {
	for len(p) > 0 {
		bp := chunkPool.Get().(*[]byte)
		n := copy(*bp, p)
		p = p[n:]
		select {
		case c.ch <- (*bp)[:n]:
		case <-c.rdone:
			chunkPool.Put(bp)
			return errStoppedReading
		}
	}
	return nil
}

// closeWrite ends the stream: the reader gets io.EOF after the queued
// chunks when err is nil, else err at once.
func (c *chanPipe) closeWrite(err error) {
	c.wonce.Do(func() {
		if err == nil {
			err = io.EOF
		}
		c.werr = err
		close(c.wdone)
	})
}

// closeRead tells the writer nothing more will be read.
func (c *chanPipe) closeRead() {
	c.ronce.Do(func() { close(c.rdone) })
}

// Read implements io.Reader for the engine's request body.
func (c *chanPipe) Read(p []byte) (int, error) {
	select {
	case <-c.wdone:
		if c.werr != io.EOF {
			return 0, c.werr
		}
	default:
	}
	if len(c.cur) == 0 {
		if c.buf != nil {
			b := c.buf[:cap(c.buf)]
			chunkPool.Put(&b)
			c.buf = nil
		}
		select {
		case b := <-c.ch:
			c.cur, c.buf = b, b
		case <-c.wdone:
			if c.werr != io.EOF {
				return 0, c.werr
			}
			// Every chunk was queued before closeWrite.
			select {
			case b := <-c.ch:
				c.cur, c.buf = b, b
			default:
				return 0, io.EOF
			}
		}
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}
