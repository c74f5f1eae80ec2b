using System.Net.Security;
using System.Net.Sockets;

namespace Patterns.Gateway.Resilience;

/// <summary>
/// The decrypted stream of a connection to a destination over HTTP/1.x with TLS (the cluster client's plaintext filter wraps the
/// <see cref="SslStream"/> in it once the handshake is done): tells the client's request body being uploaded over it what the
/// destination did meanwhile, as <see cref="DestinationConnection"/> does without TLS. The handshake's writes happen below this
/// stream, so every write here is a request's, made in that request's send. The socket cannot be peeked through TLS: when the
/// upload begins and nothing reads, this stream reads ahead itself into a buffer of its own (a real read of the
/// <see cref="SslStream"/>, which reads and writes at once), notes what it got, and hands those bytes to the handler's next read.
/// </summary>
internal sealed class TlsDestinationConnection(Stream inner) : Stream
{
    private const int AheadBytes = 4096;

    private readonly Lock _gate = new();
    private volatile ClientBodyStream? _upload;
    private int _reads;
    private Task<int>? _ahead;
    private Exception? _aheadError;
    private byte[]? _buffer;
    private int _start;
    private int _end;

    /// <summary>
    /// The cluster client's plaintext filter: wraps the decrypted stream of an HTTP/1.x connection with TLS; any other (without
    /// TLS, watched by <see cref="DestinationConnection"/> already, or HTTP/2) is left as it is.
    /// </summary>
    public static ValueTask<Stream> FilterAsync(SocketsHttpPlaintextStreamFilterContext context, CancellationToken cancellationToken) =>
        ValueTask.FromResult<Stream>(
            context.PlaintextStream is SslStream && context.NegotiatedHttpVersion.Major < 2
                ? new TlsDestinationConnection(context.PlaintextStream)
                : context.PlaintextStream);

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override void Flush() => inner.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count)
    {
        Link();
        inner.Write(buffer, offset, count);
    }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        Link();
        inner.Write(buffer);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        Link();
        return inner.WriteAsync(buffer, offset, count, cancellationToken);
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Link();
        return inner.WriteAsync(buffer, cancellationToken);
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        while (true)
        {
            Task<int>? ahead;
            lock (_gate)
            {
                ThrowIfAheadFailed();
                if (TryServe(buffer, out var served))
                {
                    return served;
                }

                ahead = _ahead;
                if (ahead is null)
                {
                    _reads++;
                    break;
                }
            }

            #pragma warning disable CA1849 // The handler reads synchronously here: its read waits for the read-ahead it replaces.
            ahead.GetAwaiter().GetResult();
            #pragma warning restore CA1849
        }

        try
        {
            var read = inner.Read(buffer);
            Seen(buffer[..read], buffer.Length);
            return read;
        }
        catch (Exception ex) when (ex is IOException or SocketException)
        {
            Failed();
            throw;
        }
        finally
        {
            Done();
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Task<int>? ahead;
        lock (_gate)
        {
            if (_aheadError is not null)
            {
                try
                {
                    ThrowIfAheadFailed();
                }
                catch (IOException ex)
                {
                    return ValueTask.FromException<int>(ex);
                }
            }

            if (TryServe(buffer.Span, out var served))
            {
                return ValueTask.FromResult(served);
            }

            ahead = _ahead;
            if (ahead is null)
            {
                // Counted, so that an upload starting meanwhile does not read ahead while this read runs.
                _reads++;
            }
        }

        if (ahead is not null)
        {
            return AfterAheadAsync(ahead, buffer, cancellationToken);
        }

        ValueTask<int> read;
        try
        {
            read = inner.ReadAsync(buffer, cancellationToken);
        }
        catch
        {
            Done();
            throw;
        }

        if (read.IsCompletedSuccessfully)
        {
            var count = read.Result;
            Seen(buffer.Span[..count], buffer.Length);
            Completed(count, buffer.Length);
            return read;
        }

        return ReadInnerAsync(read, buffer);
    }

    private void Done()
    {
        lock (_gate)
        {
            _reads--;
        }
    }

    /// <summary>A read while the connection reads ahead: waits for it, then reads again (its bytes, its end or its error first).</summary>
    private async ValueTask<int> AfterAheadAsync(Task<int> ahead, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        await ahead.WaitAsync(cancellationToken).ConfigureAwait(false);
        return await ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask<int> ReadInnerAsync(ValueTask<int> pending, Memory<byte> buffer)
    {
        int read;
        try
        {
            read = await pending.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or SocketException)
        {
            Done();
            Failed();
            throw;
        }
        catch
        {
            Done();
            throw;
        }

        Seen(buffer.Span[..read], buffer.Length);
        Completed(read, buffer.Length);
        return read;
    }

    /// <summary>Bytes read ahead and not handed over yet go first (a zero-byte read only learns that they are there).</summary>
    private bool TryServe(Span<byte> buffer, out int served)
    {
        if (_end > _start)
        {
            served = Math.Min(buffer.Length, _end - _start);
            _buffer.AsSpan(_start, served).CopyTo(buffer);
            _start += served;
            return true;
        }

        served = 0;
        return false;
    }

    /// <summary>The read-ahead failed: the handler's next read fails with its error (under the lock).</summary>
    private void ThrowIfAheadFailed()
    {
        if (_aheadError is { } error)
        {
            _aheadError = null;
            throw new IOException(error.Message, error);
        }
    }

    /// <summary>A write of the send in progress: links its upload to this connection, and reads ahead when nothing reads.</summary>
    private void Link()
    {
        if (DestinationConnection.Upload.Value is not { } upload || ReferenceEquals(_upload, upload))
        {
            return;
        }

        _upload = upload;
        upload.Linked(this);
        ReadAhead();
    }

    /// <summary>
    /// Reads ahead while the upload is watched and nothing reads (the handler's own read sees what comes: a read of its that
    /// waits is not doubled, SslStream takes one read at a time).
    /// </summary>
    private void ReadAhead()
    {
        if (_upload is not { } upload || !Watching(upload))
        {
            return;
        }

        lock (_gate)
        {
            if (_reads != 0 || _ahead is not null || _end > _start)
            {
                return;
            }

            _buffer ??= new byte[AheadBytes];
            _start = 0;
            _end = 0;

            // A read that completes at once has stored its bytes already (the lock is re-entered on this thread); one that
            // completes later clears _ahead itself, under the lock, so after this assignment.
            var ahead = ReadAheadAsync();
            if (!ahead.IsCompleted)
            {
                _ahead = ahead;
            }
        }
    }

    /// <summary>
    /// A read of the handler completed: one of no bytes (a pooled connection's idle read, started before the upload) only says
    /// that the destination sent something, so what it is, is read ahead now.
    /// </summary>
    private void Completed(int read, int room)
    {
        Done();
        if (room == 0 && read == 0)
        {
            ReadAhead();
        }
    }

    /// <summary>Reads what the destination sends next into this stream's buffer, noting it for the upload.</summary>
    private async Task<int> ReadAheadAsync()
    {
        int read;
        try
        {
            read = await inner.ReadAsync(_buffer.AsMemory(), CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            if (ex is IOException or SocketException)
            {
                Failed();
            }

            lock (_gate)
            {
                _aheadError = ex;
                _ahead = null;
            }

            return 0;
        }

        Seen(_buffer.AsSpan(0, read), AheadBytes);
        lock (_gate)
        {
            _start = 0;
            _end = read;
            _ahead = null;
        }

        return read;
    }

    /// <summary>True when <paramref name="upload"/> is still being sent over this connection.</summary>
    private bool Watching(ClientBodyStream upload) => upload.Uploading && upload.IsOver(this);

    /// <summary>Bytes from the destination (<paramref name="bytes"/>, empty at its end of the connection) while the upload is in progress.</summary>
    private void Seen(ReadOnlySpan<byte> bytes, int room)
    {
        if (_upload is not { } upload || !Watching(upload))
        {
            return;
        }

        if (bytes.IsEmpty)
        {
            if (room > 0)
            {
                upload.DestinationClosed();
            }
        }
        else
        {
            upload.DestinationAnswered(DestinationConnection.Status(bytes));
        }
    }

    /// <summary>A read failed while the upload was in progress: the destination reset the connection.</summary>
    private void Failed()
    {
        if (_upload is { } upload && Watching(upload))
        {
            upload.DestinationClosed();
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _upload = null;
            inner.Dispose();
        }

        base.Dispose(disposing);
    }
}
