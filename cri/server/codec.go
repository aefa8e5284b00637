package server

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/validation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// requestCodec is gRPC's protobuf codec, except that a request that does
// not decode (a string that is not UTF-8, a truncated field) is kept for
// the interceptors to refuse with InvalidArgument naming the field. gRPC
// itself would answer codes.Internal, "error unmarshalling request", which
// tells a client nothing about what it sent wrong.
type requestCodec struct {
	encoding.CodecV2
	// undecodable maps a request message that failed to decode to why.
	// The interceptor takes the entry out before the handler runs.
	undecodable *sync.Map
}

func newRequestCodec() requestCodec {
	return requestCodec{CodecV2: encoding.GetCodecV2("proto"), undecodable: &sync.Map{}}
}

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return err
	}
	if field := badUTF8(data.Materialize(), m.ProtoReflect().Descriptor(), ""); field != "" {
		err = fmt.Errorf("%s: is not valid UTF-8", field)
	}
	c.undecodable.Store(v, err)
	return nil
}

// check refuses a request that did not decode or that validation refuses.
func (c requestCodec) check(req any) error {
	if err, ok := c.undecodable.LoadAndDelete(req); ok {
		return fmt.Errorf("the request does not decode: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return validation.Request(req)
}

// checkedStream checks each message a streaming call receives.
type checkedStream struct {
	grpc.ServerStream
	codec requestCodec
}

func (s checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return toStatus("", s.codec.check(m))
}

// badUTF8 finds the first string field in b, a message of type md on the
// wire, that is not UTF-8, and returns its path as the CRI spells it; ""
// when there is none or b does not parse.
func badUTF8(b []byte, md protoreflect.MessageDescriptor, path string) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if typ != protowire.BytesType || fd == nil {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return ""
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		p := string(fd.Name())
		if path != "" {
			p = path + "." + p
		}
		switch {
		case fd.Kind() == protoreflect.StringKind && !utf8.Valid(v):
			return p
		case fd.IsMap():
			if bad := badUTF8(v, fd.Message(), p); bad != "" {
				return strings.Replace(bad, p+".", p+" ", 1)
			}
		case fd.Kind() == protoreflect.MessageKind:
			if bad := badUTF8(v, fd.Message(), p); bad != "" {
				return bad
			}
		}
	}
	return ""
}
