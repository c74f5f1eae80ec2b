using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http;

namespace Patterns.Gateway.Resilience;

/// <summary>
/// The client's request body as the forwarder reads it for an attempt under resilience: remembers that a read failed on the
/// client's side (the connection reset or aborted mid-upload, the server refusing the body), so that the attempt's failure is
/// not counted against the destination. The request's <c>RequestAborted</c> cannot tell: Kestrel signals it on the thread
/// pool, after the read has already failed. A read cancelled by the forwarder's own token (the destination stopped taking the
/// body, or a timeout) is not marked as failed; but the stream remembers that the gateway was waiting on the client when it
/// was cancelled (<see cref="WaitingOnClient"/>), so that a timeout that ended a stalled upload is not blamed on the destination.
/// </summary>
internal sealed class ClientBodyStream(Stream inner) : Stream
{
    private volatile bool _failed;
    private volatile bool _waiting;
    private volatile Exception? _readError;
    private volatile bool _ended;
    private volatile Stream? _connection;
    private volatile int _answer;
    private volatile bool _closed;
    private volatile bool _timedOut;
    private long _bytesRead;

    /// <summary>Gets a value indicating whether reading the client's body failed on the client's side.</summary>
    public bool Failed => _failed;

    /// <summary>
    /// Gets a value indicating whether the last read of the client's body has not returned: it is still waiting for the client's
    /// bytes, or it ended without any (cancelled, failed). A timeout that ends the request meanwhile ended an upload the client
    /// stalled: the destination had not been given the whole request. False once the body has been read to its end.
    /// </summary>
    public bool WaitingOnClient => _waiting;

    /// <summary>Gets the number of the client's body bytes read so far.</summary>
    public long BytesRead => Volatile.Read(ref _bytesRead);

    /// <summary>Gets a value indicating whether the body has not been read to its end yet (an upload in progress, or one that failed).</summary>
    public bool Uploading => !_ended;

    /// <summary>
    /// Gets the status of an answer the destination sent before the whole body had gone to it (over HTTP/1.1, seen arriving on
    /// its connection by <see cref="DestinationConnection"/>: the client's handler hands it over only after the body), or 0.
    /// </summary>
    public int DestinationAnswer => _answer;

    /// <summary>
    /// Gets a value indicating whether the destination closed (or reset) its connection, unanswered, before the whole body had
    /// gone to it (over HTTP/1.1, seen by <see cref="DestinationConnection"/>).
    /// </summary>
    public bool DestinationHasClosed => _closed;

    /// <summary>The connection the body goes over now: what an earlier one told (an attempt before a retry) is forgotten.</summary>
    internal void Linked(Stream connection)
    {
        _connection = connection;
        _answer = 0;
        _closed = false;
    }

    /// <summary>Gets the connection to the destination the body goes over now, when it is a watched one without TLS (HTTP/1.x).</summary>
    internal DestinationConnection? Connection => _connection as DestinationConnection;

    /// <summary>True when <paramref name="connection"/> is the connection the body goes over now.</summary>
    internal bool IsOver(Stream connection) => ReferenceEquals(_connection, connection);

    /// <summary>The destination's answer, with <paramref name="status"/> (0 when the bytes are not an HTTP/1.x status line: nothing is noted).</summary>
    internal void DestinationAnswered(int status)
    {
        if (status > 0 && _answer == 0)
        {
            _answer = status;
        }
    }

    /// <summary>The destination closed its connection, unanswered.</summary>
    internal void DestinationClosed()
    {
        if (_answer == 0)
        {
            _closed = true;
        }
    }

    /// <summary>
    /// Gets a value indicating whether a timeout of the gateway (an attempt's or the request's) ended an attempt of this request:
    /// a read of the body cancelled then was cancelled by the gateway, not by a destination breaking the upload off.
    /// </summary>
    public bool GatewayTimedOut => _timedOut;

    /// <summary>A timeout of the gateway ended an attempt of this request.</summary>
    internal void TimedOut() => _timedOut = true;

    /// <summary>Gets the exception the last failed read threw (a cancellation included), to recognise it inside an attempt's failure.</summary>
    public Exception? ReadError => _readError;

    [ThreadStatic]
    private static HttpRequestMessage? t_offeredFor;

    [ThreadStatic]
    private static ClientBodyStream? t_offered;

    // Bodies offered by a transform that completed asynchronously: YARP may then send on another thread than the one that
    // offered. Read only when an entry is there (s_pending), so that the usual request does not touch the map.
    private static readonly ConcurrentDictionary<HttpRequestMessage, ClientBodyStream> Pending = new(ReferenceEqualityComparer.Instance);
    private static int s_pending;

    /// <summary>
    /// Hands <paramref name="body"/> from the route's transformer to the cluster's handler, so that the connection the body goes
    /// over can tell it what the destination did (<see cref="DestinationConnection.Upload"/>). When the transforms finished
    /// synchronously (<paramref name="sameThread"/>), YARP sends <paramref name="request"/> on this thread and a thread-static slot
    /// carries it without allocating (as <see cref="ContextHandoff"/>); otherwise a shared map does, its entry removed when the
    /// request ends if the handler never took it (YARP did not send).
    /// </summary>
    public static void Offer(HttpRequestMessage request, ClientBodyStream body, HttpContext context, bool sameThread)
    {
        if (sameThread)
        {
            t_offeredFor = request;
            t_offered = body;
            return;
        }

        if (Pending.TryAdd(request, body))
        {
            Interlocked.Increment(ref s_pending);
            context.Response.OnCompleted(static r =>
            {
                Remove((HttpRequestMessage)r);
                return Task.CompletedTask;
            }, request);
        }
    }

    /// <summary>The body offered with <paramref name="request"/>, once; else <see langword="null"/>.</summary>
    public static ClientBodyStream? Take(HttpRequestMessage request)
    {
        if (!ReferenceEquals(t_offeredFor, request))
        {
            return Volatile.Read(ref s_pending) != 0 ? Remove(request) : null;
        }

        var body = t_offered;
        t_offeredFor = null;
        t_offered = null;
        return body;
    }

    private static ClientBodyStream? Remove(HttpRequestMessage request)
    {
        if (Pending.TryRemove(request, out var body))
        {
            Interlocked.Decrement(ref s_pending);
            return body;
        }

        return null;
    }

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
        _waiting = true;
        try
        {
            var read = inner.Read(buffer);
            Count(read, buffer.Length);
            return read;
        }
        catch (Exception ex) when (Mark(ex, default))
        {
            throw;
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ValueTask<int> read;
        _waiting = true;
        try
        {
            read = inner.ReadAsync(buffer, cancellationToken);
        }
        catch (Exception ex) when (Mark(ex, cancellationToken))
        {
            throw;
        }

        if (read.IsCompletedSuccessfully)
        {
            Count(read.Result, buffer.Length);
            return read;
        }

        return Awaited(read, buffer.Length, cancellationToken);
    }

    /// <summary>A read that returned <paramref name="count"/> bytes into a buffer of <paramref name="length"/>: none into a buffer with room is the body's end.</summary>
    private void Count(int count, int length)
    {
        Volatile.Write(ref _bytesRead, _bytesRead + count);
        if (count == 0 && length > 0)
        {
            _ended = true;
        }

        _waiting = false;
    }

    private async ValueTask<int> Awaited(ValueTask<int> read, int length, CancellationToken cancellationToken)
    {
        try
        {
            var count = await read.ConfigureAwait(false);
            Count(count, length);
            return count;
        }
        catch (Exception ex) when (Mark(ex, cancellationToken))
        {
            throw;
        }
    }

    /// <summary>Marks a failed read as the client's unless the caller's token cancelled it; never catches (an exception filter).</summary>
    private bool Mark(Exception exception, CancellationToken cancellationToken)
    {
        _readError = exception;
        if (!(exception is OperationCanceledException && cancellationToken.IsCancellationRequested))
        {
            _failed = true;
        }

        return false;
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
