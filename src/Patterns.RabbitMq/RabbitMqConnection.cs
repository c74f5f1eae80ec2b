using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Patterns.Transport;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

namespace Patterns.RabbitMq;

/// <summary>
/// One auto-recovering connection (RabbitMQ.Client recovers it, its channels, consumers and the topology
/// declared on it after a broker restart), opened lazily, with a signal that says whether it is usable now.
/// </summary>
internal sealed class RabbitMqConnection : IAsyncDisposable
{
    private readonly ConnectionFactory _factory;
    private readonly RabbitMqTransportOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _openGate = new(1, 1);
    private readonly Lock _gate = new();
    private IConnection? _connection;
    private TaskCompletionSource _open = NewSignal();
    private volatile bool _usable;
    private string _lastFailure = "not connected yet";
    private volatile bool _disposed;
    private volatile bool _failed;

    public RabbitMqConnection(ConnectionFactory factory, RabbitMqTransportOptions options, string purpose, TimeProvider timeProvider, ILogger logger)
    {
        _factory = factory;
        _options = options;
        Purpose = purpose;
        _timeProvider = timeProvider;
        _logger = logger;
        Endpoint = Describe(options.Uri!);
    }

    public string Purpose { get; }

    /// <summary>Gets the broker address without credentials, for messages.</summary>
    public string Endpoint { get; }

    /// <summary>Gets a value indicating whether the connection is open and not recovering.</summary>
    public bool IsUsable => _usable && Volatile.Read(ref _connection) is { IsOpen: true };

    /// <summary>Gets this connection's health: degraded once it failed to connect or lost the broker, until it is back.</summary>
    public ComponentHealth Health
    {
        get
        {
            var name = $"{Purpose} connection";
            if (IsUsable)
            {
                return ComponentHealth.Healthy(name, $"connected to RabbitMQ at {Endpoint}");
            }

            return Volatile.Read(ref _connection) is null && !_failed
                ? ComponentHealth.Healthy(name, $"not connected yet: connects to RabbitMQ at {Endpoint} on first use")
                : ComponentHealth.Degraded(name, $"RabbitMQ at {Endpoint} is not reachable ({_lastFailure})");
        }
    }

    public static string Describe(Uri uri) => $"{uri.Scheme}://{uri.Host}:{(uri.IsDefaultPort ? (uri.Scheme == "amqps" ? 5671 : 5672) : uri.Port)}{uri.AbsolutePath}";

    /// <summary>Gets the open connection, opening it the first time and waiting (up to the reconnect timeout) while it recovers.</summary>
    public async ValueTask<IConnection> GetAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var connection = Volatile.Read(ref _connection);
        if (connection is null)
        {
            connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        }

        if (!IsUsable)
        {
            await WaitUntilUsableAsync(cancellationToken).ConfigureAwait(false);
        }

        return connection;
    }

    /// <summary>Waits until the connection is usable again, for at most the reconnect timeout.</summary>
    public async Task WaitUntilUsableAsync(CancellationToken cancellationToken)
    {
        Task signal;
        lock (_gate)
        {
            if (_connection is { IsOpen: true } && _open.Task.IsCompleted)
            {
                return;
            }

            signal = _open.Task;
        }

        try
        {
            await signal.WaitAsync(_options.ReconnectTimeout, _timeProvider, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException ex)
        {
            throw Unavailable(ex);
        }
    }

    /// <summary>A clear exception for "the broker is not there".</summary>
    public TransportUnavailableException Unavailable(Exception? cause = null)
    {
        var message = $"RabbitMQ at {Endpoint} is not reachable ({_lastFailure}), and the connection did not come back within {_options.ReconnectTimeout}.";
        return cause is null ? new TransportUnavailableException(message) : new TransportUnavailableException(message, cause);
    }

    /// <summary>Gets a value indicating whether an exception means the connection or channel went away (so the operation may be tried again once it is back).</summary>
    public static bool IsConnectivity(Exception exception) =>
        exception is AlreadyClosedException or BrokerUnreachableException or IOException or SocketException
            or System.Threading.Channels.ChannelClosedException or TimeoutException
        || (exception is OperationInterruptedException interrupted && !IsChannelError(interrupted.ShutdownReason));

    /// <summary>Gets a value indicating whether connecting failed because the broker refused the credentials or the virtual host.</summary>
    private static bool IsRefused(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is AuthenticationFailureException
                || (e is OperationInterruptedException { ShutdownReason.ReplyCode: 403 or 530 }))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Gets a value indicating whether a shutdown was the broker refusing one operation (the channel closes; the connection stays).</summary>
    public static bool IsChannelError(ShutdownEventArgs? reason) =>
        reason is { Initiator: ShutdownInitiator.Peer, ReplyCode: 403 or 404 or 405 or 406 };

    public async ValueTask DisposeAsync()
    {
        _disposed = true;
        IConnection? connection;
        lock (_gate)
        {
            connection = _connection;
            _connection = null;
            _usable = false;
            _open.TrySetException(new ObjectDisposedException(nameof(RabbitMqConnection), "The RabbitMQ transport is stopped."));
        }

        if (connection is not null)
        {
            connection.ConnectionShutdownAsync -= OnShutdownAsync;
            connection.RecoverySucceededAsync -= OnRecoveredAsync;
            try
            {
                await connection.CloseAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }
            catch (Exception ex) when (IsConnectivity(ex) || ex is OperationCanceledException)
            {
                // Already gone.
            }

            await connection.DisposeAsync().ConfigureAwait(false);
        }

        _openGate.Dispose();
    }

    private async ValueTask<IConnection> OpenAsync(CancellationToken cancellationToken)
    {
        await _openGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (Volatile.Read(ref _connection) is { } existing)
            {
                return existing;
            }

            var started = _timeProvider.GetTimestamp();
            while (true)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                try
                {
                    var connection = await _factory.CreateConnectionAsync(cancellationToken).ConfigureAwait(false);
                    connection.ConnectionShutdownAsync += OnShutdownAsync;
                    connection.RecoverySucceededAsync += OnRecoveredAsync;
                    lock (_gate)
                    {
                        _connection = connection;
                        _open.TrySetResult();
                        _usable = true;
                    }

                    RabbitMqLog.Connected(_logger, Endpoint, Purpose);
                    return connection;
                }
                catch (Exception ex) when (IsRefused(ex))
                {
                    // Wrong credentials or virtual host: trying again will not help.
                    _lastFailure = $"refused: {ex.InnerException?.Message ?? ex.Message}";
                    _failed = true;
                    throw new TransportUnavailableException($"RabbitMQ at {Endpoint} refused the connection: {ex.InnerException?.Message ?? ex.Message}", ex);
                }
                catch (Exception ex) when (!cancellationToken.IsCancellationRequested && (IsConnectivity(ex) || ex is OperationCanceledException))
                {
                    _lastFailure = ex.InnerException?.Message ?? ex.Message;
                    _failed = true;
                    var delay = _options.NetworkRecoveryInterval;
                    if (_timeProvider.GetElapsedTime(started) + delay > _options.ReconnectTimeout)
                    {
                        throw new TransportUnavailableException(
                            $"RabbitMQ at {Endpoint} is not reachable: {_lastFailure} (tried for {_options.ReconnectTimeout}).", ex);
                    }

                    RabbitMqLog.ConnectFailed(_logger, ex, Endpoint, delay);
                    await Task.Delay(delay, _timeProvider, cancellationToken).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            _openGate.Release();
        }
    }

    private Task OnShutdownAsync(object sender, ShutdownEventArgs args)
    {
        if (_disposed || args.Initiator == ShutdownInitiator.Application)
        {
            return Task.CompletedTask;
        }

        _lastFailure = $"{args.ReplyCode} {args.ReplyText}".Trim();
        lock (_gate)
        {
            _usable = false;
            if (_open.Task.IsCompleted)
            {
                _open = NewSignal();
            }
        }

        RabbitMqLog.ConnectionLost(_logger, Purpose, Endpoint, _lastFailure);
        return Task.CompletedTask;
    }

    private Task OnRecoveredAsync(object sender, AsyncEventArgs args)
    {
        lock (_gate)
        {
            _open.TrySetResult();
            _usable = true;
        }

        RabbitMqLog.ConnectionRecovered(_logger, Purpose, Endpoint);
        return Task.CompletedTask;
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
