using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Patterns.Transport;

namespace Patterns.InMemory;

/// <summary>Creates the in-process transport, on System.Threading.Channels.</summary>
/// <remarks>
/// Every buffer is bounded. Bodies travel by reference and are never serialized. Nothing survives the
/// process: messages still buffered when the process ends, or when a drain deadline passes, are lost (and
/// counted in <c>patterns.messages.dropped</c> and logged).
/// </remarks>
public static class InMemoryTransport
{
    /// <summary>Creates an in-memory transport.</summary>
    /// <param name="options">Its options; defaults when <see langword="null"/>.</param>
    /// <param name="timeProvider">The clock for delayed redeliveries and timestamps; <see cref="TimeProvider.System"/> when <see langword="null"/>.</param>
    /// <param name="loggerFactory">Where it logs; nowhere when <see langword="null"/>.</param>
    /// <returns>The transport.</returns>
    public static MessageTransport Create(InMemoryTransportOptions? options = null, TimeProvider? timeProvider = null, ILoggerFactory? loggerFactory = null) =>
        new InMemoryMessageTransport(
            options ?? new InMemoryTransportOptions(),
            timeProvider ?? TimeProvider.System,
            (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Patterns.InMemory.InMemoryTransport"));
}
