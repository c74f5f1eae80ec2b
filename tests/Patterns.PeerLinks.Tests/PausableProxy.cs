using System.Net;
using System.Net.Sockets;

namespace Patterns.PeerLinks.Tests;

/// <summary>
/// A loopback TCP relay to one node whose client-to-server direction can be paused: while paused it stops reading from
/// the dialling node, so that node's TCP and HTTP/2 windows fill as if the receiver had stopped reading. It can also cut
/// every connection it relays (a reset on both sides, as a failing network would) and keep accepting new ones.
/// </summary>
internal sealed class PausableProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _pumps = [];
    private readonly List<TcpClient> _sockets = [];
    private readonly Task _accepting;
    private TaskCompletionSource _resumed = Resumed();

    public PausableProxy(int targetPort)
    {
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = AcceptAsync(targetPort);
    }

    public int Port { get; }

    /// <summary>Gets the bytes relayed from the dialling node so far.</summary>
    public long Forwarded => Interlocked.Read(ref _forwarded);

    private long _forwarded;

    public void Pause() => _resumed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Resume() => _resumed.TrySetResult();

    /// <summary>Gets how many connections the relay has accepted so far.</summary>
    public int Accepted => Volatile.Read(ref _accepted);

    private int _accepted;

    /// <summary>Resets every relayed connection on both sides (no orderly close); new connections are relayed as before.</summary>
    /// <returns>How many live sockets were cut.</returns>
    public int Cut()
    {
        TcpClient[] sockets;
        lock (_pumps)
        {
            sockets = [.. _sockets];
            _sockets.Clear();
        }

        var cut = 0;
        foreach (var socket in sockets)
        {
            if (socket.Client is not { } live)
            {
                continue; // That relay had ended already.
            }

            try
            {
                // A zero linger makes the close send a reset instead of a FIN.
                live.LingerState = new LingerOption(true, 0);
                live.Close();
                cut++;
            }
            catch (Exception ex) when (ex is ObjectDisposedException or SocketException)
            {
                // That relay ended meanwhile.
            }
        }

        return cut;
    }

    public async ValueTask DisposeAsync()
    {
        Resume();
        await _stop.CancelAsync();
        _listener.Stop();
        await Task.WhenAll([_accepting, .. _pumps]).ContinueWith(static _ => { }, TaskScheduler.Default);
        _stop.Dispose();
    }

    private static TaskCompletionSource Resumed()
    {
        var resumed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        resumed.SetResult();
        return resumed;
    }

    private async Task AcceptAsync(int targetPort)
    {
        while (!_stop.IsCancellationRequested)
        {
            var client = await _listener.AcceptTcpClientAsync(_stop.Token);
            var server = new TcpClient { NoDelay = true };
            await server.ConnectAsync(IPAddress.Loopback, targetPort, _stop.Token);
            client.NoDelay = true;
            Interlocked.Increment(ref _accepted);
            lock (_pumps)
            {
                _sockets.Add(client);
                _sockets.Add(server);
                _pumps.Add(PumpAsync(client, server, pausable: true));
                _pumps.Add(PumpAsync(server, client, pausable: false));
            }
        }
    }

    private async Task PumpAsync(TcpClient from, TcpClient to, bool pausable)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            var input = from.GetStream();
            var output = to.GetStream();
            while (true)
            {
                if (pausable)
                {
                    await _resumed.Task.WaitAsync(_stop.Token);
                }

                var n = await input.ReadAsync(buffer, _stop.Token);
                if (n == 0)
                {
                    break;
                }

                await output.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
                if (pausable)
                {
                    Interlocked.Add(ref _forwarded, n);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // The relay ends with either side.
        }
        finally
        {
            from.Dispose();
            to.Dispose();
        }
    }
}
