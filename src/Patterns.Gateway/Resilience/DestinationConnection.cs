using System.Net.Sockets;

namespace Patterns.Gateway.Resilience;

/// <summary>
/// A TCP connection to a destination (the cluster client's connect callback makes every one): a plain
/// <see cref="NetworkStream"/> that also tells the client's request body being uploaded over it (<see cref="ClientBodyStream"/>,
/// carried by <see cref="Upload"/> down the send) what the destination did meanwhile. Over HTTP/1.1 the client's handler reads
/// the destination's answer only once the whole request body has gone, so a destination that closes its connection, or answers
/// early (a 413, a 408 of its own timeout) while the upload is stalled or slow, shows only here: its bytes wait on the socket,
/// and its end of the connection reads as closed. The upload is told when the gateway writes to the destination and when the
/// handler disposes the connection (after a failure, a timeout or a cancellation, before the attempt is judged).
/// </summary>
internal sealed class DestinationConnection(Socket socket) : NetworkStream(socket, ownsSocket: true)
{
    /// <summary>
    /// The client's body being uploaded by the send in progress, set by the cluster's handler around the send so that the
    /// connection's writes, made inside it, find it.
    /// </summary>
    public static readonly AsyncLocal<ClientBodyStream?> Upload = new();

    private ClientBodyStream? _upload;
    private volatile bool _writing;

    /// <summary>The cluster client's connect callback: the connection SocketsHttpHandler makes itself, as this stream.</summary>
    public static async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(context.DnsEndPoint, cancellationToken).ConfigureAwait(false);
            return new DestinationConnection(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public override void Write(byte[] buffer, int offset, int count)
    {
        Link();
        base.Write(buffer, offset, count);
    }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        Link();
        base.Write(buffer);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        Link();
        return base.WriteAsync(buffer, offset, count, cancellationToken);
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Link();
        var write = base.WriteAsync(buffer, cancellationToken);
        return write.IsCompleted || _upload is null ? write : Pending(write);
    }

    /// <summary>
    /// Gets a value indicating whether a write of an upload to the destination has not completed: its transport stopped taking
    /// bytes (its TCP window is full: it stopped reading).
    /// </summary>
    public bool WritePending => _writing;

    private async ValueTask Pending(ValueTask write)
    {
        _writing = true;
        try
        {
            await write.ConfigureAwait(false);
        }
        finally
        {
            _writing = false;
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && _upload is { } upload)
        {
            _upload = null;
            Tell(upload);
        }

        base.Dispose(disposing);
    }

    /// <summary>A write of the send in progress: links its upload to this connection, and tells it an answer already waiting.</summary>
    private void Link()
    {
        if (Upload.Value is not { } upload)
        {
            return;
        }

        if (!ReferenceEquals(_upload, upload))
        {
            _upload = upload;
            upload.Linked(this);
        }
        else if (upload.Uploading && Socket.Available > 0)
        {
            // The destination wrote while it was still being sent the body: an early answer (its bytes stay for the handler).
            Tell(upload);
        }
    }

    /// <summary>Tells <paramref name="upload"/>, if it is still uploading over this connection, what the destination did: answered, closed, or nothing.</summary>
    private void Tell(ClientBodyStream upload)
    {
        if (!upload.Uploading || !upload.IsOver(this))
        {
            return;
        }

        try
        {
            var socket = Socket;
            if (socket.Available > 0)
            {
                upload.DestinationAnswered(PeekStatus(socket));
            }
            else if (socket.Poll(0, SelectMode.SelectRead))
            {
                // Readable with nothing to read: the destination ended its side of the connection (or reset it).
                upload.DestinationClosed();
            }
        }
        catch (SocketException)
        {
            // Reset by the destination.
            upload.DestinationClosed();
        }
        catch (ObjectDisposedException)
        {
            // Closed already: nothing to tell.
        }
    }

    /// <summary>The status of an HTTP/1.x answer waiting on the socket, or 0 when the bytes are not one (HTTP/2 frames, TLS records).</summary>
    private static int PeekStatus(Socket socket)
    {
        // "HTTP/1.1 413"
        Span<byte> head = stackalloc byte[12];
        var read = socket.Receive(head, SocketFlags.Peek);
        if (read < head.Length || !head[..7].SequenceEqual("HTTP/1."u8) || head[8] != (byte)' ')
        {
            return 0;
        }

        var status = 0;
        foreach (var digit in head[9..12])
        {
            if (digit is < (byte)'0' or > (byte)'9')
            {
                return 0;
            }

            status = (status * 10) + (digit - '0');
        }

        return status;
    }
}
