using System.Buffers;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Patterns.Gateway.Configuration;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Resilience;

/// <summary>
/// In the proxy pipeline: reads the body of an idempotent request into memory, up to the cluster's
/// <see cref="GatewayMetadata.RetryMaxBufferedBodyBytes"/>, when the cluster retries, so that a retry or a failover can
/// send it again. A declared length or a streamed (chunked) body is handled alike: a body that ends within the limit is
/// kept; a larger one is forwarded once, the part already read followed by the rest, and a retry is refused with the reason.
/// </summary>
internal static class BodyBufferingMiddleware
{
    private const int ChunkSize = 16 * 1024;

    public static Task InvokeAsync(HttpContext context, RequestDelegate next)
    {
        // A request without a body (the usual GET: no length, and the server says it can have none) leaves before any lookup.
        var request = context.Request;
        var length = request.ContentLength;
        if (length == 0
            || (length is null && context.Features.Get<IHttpRequestBodyDetectionFeature>() is { CanHaveBody: false })
            || context.Features.Get<IReverseProxyFeature>() is not { } feature
            || feature.Cluster is null
            || ClusterPolicy.Effective(feature, null, context) is not { MaxRetries: > 0 } policy
            || !ResilienceHandler.IsIdempotent(request.Method))
        {
            return next(context);
        }

        return BufferAsync(context, policy.MaxBufferedBodyBytes, next);
    }

    private static async Task BufferAsync(HttpContext context, long limit, RequestDelegate next)
    {
        var request = context.Request;
        if (request.ContentLength is { } length)
        {
            if (length > limit)
            {
                context.Features.Set(new UnreplayableBody($"the request body of {length} bytes is larger than {GatewayMetadata.RetryMaxBufferedBodyBytes} ({limit} bytes), so it cannot be sent again."));
            }
            else
            {
                var bytes = new byte[length];
                await request.Body.ReadExactlyAsync(bytes, context.RequestAborted).ConfigureAwait(false);
                Keep(context, bytes);
            }

            await next(context).ConfigureAwait(false);
            return;
        }

        // A streamed body of unknown length: read until it ends or passes the limit, whichever comes first.
        var buffer = new ArrayBufferWriter<byte>((int)Math.Min(limit + 1, ChunkSize));
        var ended = false;
        while (buffer.WrittenCount <= limit)
        {
            var read = await request.Body.ReadAsync(buffer.GetMemory((int)Math.Min(limit + 1 - buffer.WrittenCount, ChunkSize)), context.RequestAborted).ConfigureAwait(false);
            if (read == 0)
            {
                ended = true;
                break;
            }

            buffer.Advance(read);
        }

        if (ended)
        {
            Keep(context, buffer.WrittenSpan.ToArray());
        }
        else
        {
            request.Body = new PrefixedStream(buffer.WrittenMemory, request.Body);
            context.Features.Set(new UnreplayableBody($"the streamed request body is larger than {GatewayMetadata.RetryMaxBufferedBodyBytes} ({limit} bytes), so it cannot be sent again."));
        }

        await next(context).ConfigureAwait(false);
    }

    private static void Keep(HttpContext context, byte[] bytes)
    {
        context.Request.Body = new MemoryStream(bytes, writable: false);
        context.Features.Set(new BufferedBody(bytes));
    }

    /// <summary>The bytes read while looking for the end of a body, then the rest of the original body.</summary>
    private sealed class PrefixedStream(ReadOnlyMemory<byte> prefix, Stream rest) : Stream
    {
        private ReadOnlyMemory<byte> _prefix = prefix;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            if (_prefix.IsEmpty)
            {
                return rest.Read(buffer);
            }

            var count = Math.Min(buffer.Length, _prefix.Length);
            _prefix.Span[..count].CopyTo(buffer);
            _prefix = _prefix[count..];
            return count;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_prefix.IsEmpty)
            {
                return rest.ReadAsync(buffer, cancellationToken);
            }

            var count = Math.Min(buffer.Length, _prefix.Length);
            _prefix.Span[..count].CopyTo(buffer.Span);
            _prefix = _prefix[count..];
            return new ValueTask<int>(count);
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
