package providers

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/blockxfer/blockxfer/providers/internal/fdpass"
	"github.com/blockxfer/blockxfer/providers/internal/memfd"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/providers/providerpb"
)

// ringChunk is the size of one copy-in or read-back descriptor when bytes
// go through a staging slot the call holds: the host fills chunk k+1 while
// the plugin copies chunk k out.
const ringChunk = 1 << 20

// startRing creates the ring, sends it to the plugin and attaches it. On
// error the client keeps using gRPC for every call.
func (c *GRPCClient) startRing(ctx context.Context, entries int) error {
	if c.fds == nil {
		return errors.New("no side socket")
	}
	sq := uint32(DefaultRingEntries)
	if entries > 0 {
		sq = 1
		for sq < uint32(min(entries, maxRingEntries)) {
			sq <<= 1
		}
	}
	cq := uint32(min(ringOps, sq))
	size := ringSize(sq, cq)
	fd, err := memfd.Create("blockxfer-ring", size, memfd.SealShrink|memfd.SealGrow)
	if err != nil {
		return err
	}
	defer memfd.Close(fd) // the mappings keep the memory
	mem, err := memfd.Map(fd, size)
	if err != nil {
		return err
	}
	writeRingHeader(mem, sq, cq)
	const tag = ringTag | 1
	if err := c.fds.Send(fdpass.KindStaging, tag, fd); err != nil {
		memfd.Unmap(mem)
		return err
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), attachTimeout)
	defer cancel()
	if _, err := c.rpc.AttachRing(actx, &providerpb.AttachRingRequest{RingId: tag, Size: size, Version: ringVersion, SqEntries: sq, CqEntries: cq}); err != nil {
		memfd.Unmap(mem)
		return c.callErr(actx, "attach ring", err)
	}
	c.ring = newRingClient(mem, sq, cq, ringSpin())
	return nil
}

// ringResult turns a ring operation's outcome into the error the gRPC path
// would return for it.
func (c *GRPCClient) ringResult(op string, res cqe, err error) error {
	if err != nil {
		return fmt.Errorf("providers: %s: %s: %w", c.name, op, err)
	}
	if res.status == ringOK {
		return nil
	}
	re := &RemoteError{Plugin: c.name, Op: op, Code: codes.Unknown, Message: res.msg}
	switch res.status {
	case ringErrNoDmabuf:
		re.Code, re.Err = codes.FailedPrecondition, memory.ErrNoDmabuf
	case ringErrUnknown:
		re.Code, re.Err = codes.NotFound, memory.ErrUnknownBuffer
	case ringErrBounds:
		re.Code, re.Err = codes.OutOfRange, memory.ErrOutOfBounds
	case ringErrUnusable:
		re.Code, re.Err = codes.FailedPrecondition, ErrUnusable
	case ringErrCanceled:
		re.Code = codes.Canceled
	case ringErrDeadline:
		re.Code = codes.DeadlineExceeded
	case ringErrDescriptor:
		re.Code, re.Err = codes.InvalidArgument, ErrProtocol
	}
	return re
}

// ringOne submits one descriptor and waits for it.
func (c *GRPCClient) ringOne(ctx context.Context, op string, e sqe) (cqe, error) {
	o, err := c.ring.submit(ctx, e)
	if err != nil {
		return cqe{}, c.ringResult(op, cqe{}, err)
	}
	res, err := c.ring.wait(ctx, o)
	return res, c.ringResult(op, res, err)
}

// ringCopyIn is CopyIn over the ring (bounds checked).
func (c *GRPCClient) ringCopyIn(ctx context.Context, dst memory.BufferID, off int64, src []byte) error {
	if s, soff := c.stage.within(src); s != nil {
		_, err := c.ringOne(ctx, "copy-in", sqe{op: opCopyIn, buf: uint64(dst), off: off, stg: s.id, stgOff: soff, n: int64(len(src))})
		return err
	}
	return c.ringStaged(ctx, "copy-in", len(src),
		func(stgOff int64, pos, n int) sqe {
			return sqe{op: opCopyIn, buf: uint64(dst), off: off + int64(pos), stgOff: stgOff, n: int64(n)}
		},
		func(area []byte, pos int) { copy(area, src[pos:]) }, nil)
}

// CopyInChecksum implements memory.CopyInChecksummer: CopyIn of src, which
// must lie in a lent Staging buffer, whose ring completion also carries the
// CRC-32C the plugin computed over the destination right after its copy,
// continued from crc. It fails with an error wrapping
// memory.ErrNoCopyInChecksum, having copied nothing, when it cannot: src
// outside staging, no ring, or a plugin that refused the operation once
// (its provider does not implement memory.CopyInChecksummer, or it
// predates the operation).
func (c *GRPCClient) CopyInChecksum(ctx context.Context, dst memory.BufferID, off int64, src []byte, crc uint32) (uint32, error) {
	if err := c.begin(); err != nil {
		return 0, err
	}
	defer c.end()
	if err := c.checkRange("copy-in", dst, off, int64(len(src))); err != nil {
		return 0, err
	}
	s, soff := c.stage.within(src)
	if c.ring == nil || c.ring.noCopySum.Load() || s == nil {
		return 0, fmt.Errorf("providers: %s: copy-in: %w", c.name, memory.ErrNoCopyInChecksum)
	}
	res, err := c.ringOne(ctx, "copy-in", sqe{op: opCopyInChecksum, buf: uint64(dst), off: off, stg: s.id, stgOff: soff,
		n: int64(len(src)), seed: crc})
	if err != nil && res.status == ringErrDescriptor {
		// Refused before anything moved: copy-ins go plain from now on.
		c.ring.noCopySum.Store(true)
		c.logger.Debug("plugin does not checksum copy-ins; the engine checksums extents after they land", "plugin", c.name, "reason", res.msg)
		return 0, fmt.Errorf("providers: %s: copy-in: %w: %w", c.name, memory.ErrNoCopyInChecksum, err)
	}
	return res.crc, err
}

// CopyInChecksum copies src, from a lent staging buffer, into dst at off
// and returns the CRC-32C of the bytes that landed, continued from crc;
// see GRPCClient.CopyInChecksum.
func (p *Plugin) CopyInChecksum(ctx context.Context, dst memory.BufferID, off int64, src []byte, crc uint32) (uint32, error) {
	return p.client.CopyInChecksum(ctx, dst, off, src, crc)
}

var (
	_ memory.CopyInChecksummer = (*GRPCClient)(nil)
	_ memory.CopyInChecksummer = (*Plugin)(nil)
)

// ringReadBack is ReadBack over the ring (bounds checked).
func (c *GRPCClient) ringReadBack(ctx context.Context, src memory.BufferID, off int64, p []byte) error {
	if s, soff := c.stage.within(p); s != nil {
		_, err := c.ringOne(ctx, "read-back", sqe{op: opReadBack, buf: uint64(src), off: off, stg: s.id, stgOff: soff, n: int64(len(p))})
		return err
	}
	return c.ringStaged(ctx, "read-back", len(p),
		func(stgOff int64, pos, n int) sqe {
			return sqe{op: opReadBack, buf: uint64(src), off: off + int64(pos), stgOff: stgOff, n: int64(n)}
		},
		nil, func(area []byte, pos int) { copy(p[pos:], area) })
}

// staged is one chunk in flight through a staging slot.
type staged struct {
	op     *ringOp
	pos, n int
}

// ringStaged moves total bytes through one staging slot in ringChunk
// descriptors, several in flight: fill (copy-in) fills a chunk's area
// before its descriptor is submitted, drain (read-back) empties it once the
// descriptor completed. mk builds a chunk's descriptor (the slot's id is
// filled in here). If ctx ends, the call returns at once and the slot goes
// back to the pool when the plugin has completed every chunk in flight.
func (c *GRPCClient) ringStaged(ctx context.Context, op string, total int, mk func(stgOff int64, pos, n int) sqe, fill, drain func(area []byte, pos int)) error {
	if total == 0 {
		return nil
	}
	s, err := c.stage.get(ctx, c.dead())
	if err != nil {
		return c.callErr(ctx, op, err)
	}
	chunk := min(ringChunk, len(s.mem))
	areas := make([]staged, len(s.mem)/chunk)
	area := func(i int) []byte { return s.mem[i*chunk : (i+1)*chunk] }
	var firstErr error
	// settle waits for the chunk in area i, if any, and drains it. If ctx
	// ends, the chunk stays in flight.
	settle := func(i int) error {
		a := &areas[i]
		if a.op == nil {
			return nil
		}
		res, ok, err := c.ring.await(ctx, a.op)
		if !ok {
			return fmt.Errorf("providers: %s: %s: %w", c.name, op, err)
		}
		a.op = nil
		if err == nil && res.status == ringOK && drain != nil {
			drain(area(i)[:a.n], a.pos)
		}
		return c.ringResult(op, res, err)
	}
	i := 0
	for pos := 0; pos < total; pos += chunk {
		if err := settle(i); err != nil {
			firstErr = err
			break
		}
		n := min(chunk, total-pos)
		if fill != nil {
			fill(area(i)[:n], pos)
		}
		e := mk(int64(i*chunk), pos, n)
		e.stg = s.id
		o, err := c.ring.submit(ctx, e)
		if err != nil {
			firstErr = c.ringResult(op, cqe{}, err)
			break
		}
		areas[i] = staged{op: o, pos: pos, n: n}
		i = (i + 1) % len(areas)
	}
	for j := range areas {
		if err := settle((i + j) % len(areas)); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	// What is still in flight is so because ctx ended: the reaper takes
	// it over, and the last chunk to complete returns the slot.
	g := &opGroup{release: func() { c.stage.put(s) }}
	g.refs.Store(1)
	for j := range areas {
		if a := &areas[j]; a.op != nil {
			g.refs.Add(1)
			if !c.ring.abandon(a.op, g.drop) {
				g.refs.Add(-1)
			}
		}
	}
	g.drop()
	return firstErr
}

// ringGather is Gather over the ring (copies checked): batches of at most
// maxBatch copies, one after another so that their order holds.
func (c *GRPCClient) ringGather(ctx context.Context, copies []memory.Copy) error {
	for len(copies) > 0 {
		batch := copies[:min(len(copies), int(c.ring.maxBatch))]
		copies = copies[len(batch):]
		o, err := c.ring.submitGather(ctx, batch)
		if err != nil {
			return c.ringResult("gather", cqe{}, err)
		}
		res, err := c.ring.wait(ctx, o)
		if err := c.ringResult("gather", res, err); err != nil {
			return err
		}
	}
	return nil
}

// ringChecksum is Checksum over the ring (range checked).
func (c *GRPCClient) ringChecksum(ctx context.Context, buf memory.BufferID, off, n int64) (uint32, error) {
	res, err := c.ringOne(ctx, "checksum", sqe{op: opChecksum, buf: uint64(buf), off: off, n: n})
	return res.crc, err
}
