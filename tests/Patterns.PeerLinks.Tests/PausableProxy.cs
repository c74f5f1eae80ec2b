using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;

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

    public void Pause() => _ = Pause(connection: 0);

    /// <summary>
    /// Pauses only the <paramref name="connection"/>-th connection the relay accepted (counted from 1; 0 pauses all), so
    /// that one HTTP/2 connection of a link stalls while its other one carries on.
    /// </summary>
    /// <returns>A task that completes once a paused relay has forwarded the read it was in and relays nothing more.</returns>
    public Task Pause(int connection)
    {
        // Both completion sources are in place before the connection number is published: a relay that sees the
        // number also sees them, and parks at once rather than one read later.
        var parked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _parked = parked;
        _resumed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _pausedConnection, connection);
        return parked.Task;
    }

    private TaskCompletionSource _parked = new();

    private int _pausedConnection;

    /// <summary>Gets the bytes relayed from the dialling node on the <paramref name="connection"/>-th connection (counted from 1).</summary>
    public long ForwardedOn(int connection)
    {
        lock (_pumps)
        {
            return connection <= _forwardedOn.Count ? _forwardedOn[connection - 1].Value : 0;
        }
    }

    private readonly List<StrongBox<long>> _forwardedOn = [];

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

    /// <summary>
    /// Gets or sets a value indicating whether the relay resets every new connection at once instead of relaying it (a
    /// peer that stays unreachable: each dial fails with a reset, not a refusal, so the link keeps retrying through its
    /// grace). Existing connections are not touched: <see cref="Cut"/> them.
    /// </summary>
    public bool Refusing
    {
        get => Volatile.Read(ref _refusing);
        set => Volatile.Write(ref _refusing, value);
    }

    private bool _refusing;

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
            if (Refusing)
            {
                client.LingerState = new LingerOption(true, 0);
                client.Dispose();
                continue;
            }

            var server = new TcpClient { NoDelay = true };
            await server.ConnectAsync(IPAddress.Loopback, targetPort, _stop.Token);
            client.NoDelay = true;
            var number = Interlocked.Increment(ref _accepted);
            lock (_pumps)
            {
                var forwarded = new StrongBox<long>();
                _forwardedOn.Add(forwarded);
                _sockets.Add(client);
                _sockets.Add(server);
                _pumps.Add(PumpAsync(client, server, number, forwarded));
                _pumps.Add(PumpAsync(server, client, connection: 0, forwarded: null));
            }
        }
    }

    /// <summary>Relays one direction; <paramref name="connection"/> 0 is the direction back to the dialler, never paused.</summary>
    private async Task PumpAsync(TcpClient from, TcpClient to, int connection, StrongBox<long>? forwarded)
    {
        var pausable = connection > 0;
        var buffer = new byte[16 * 1024];
        try
        {
            var input = from.GetStream();
            var output = to.GetStream();
            while (true)
            {
                if (pausable && Volatile.Read(ref _pausedConnection) is var paused && (paused == 0 || paused == connection) && !_resumed.Task.IsCompleted)
                {
                    _parked.TrySetResult();
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
                    Interlocked.Add(ref forwarded!.Value, n);
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
