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

    /// <summary>Gets the exception the last failed read threw (a cancellation included), to recognise it inside an attempt's failure.</summary>
    public Exception? ReadError => _readError;

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
            Volatile.Write(ref _bytesRead, _bytesRead + read);
            _waiting = false;
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
            Volatile.Write(ref _bytesRead, _bytesRead + read.Result);
            _waiting = false;
            return read;
        }

        return Awaited(read, cancellationToken);
    }

    private async ValueTask<int> Awaited(ValueTask<int> read, CancellationToken cancellationToken)
    {
        try
        {
            var count = await read.ConfigureAwait(false);
            Volatile.Write(ref _bytesRead, _bytesRead + count);
            _waiting = false;
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
