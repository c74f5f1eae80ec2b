using Patterns.Messaging;

namespace Patterns.Transport;

/// <summary>
/// Handles one delivery from a <see cref="MessageTransport"/> subscription and says how to settle it.
/// </summary>
/// <param name="envelope">The delivered message.</param>
/// <param name="cancellationToken">Cancelled when the subscription stops and its drain deadline has passed.</param>
/// <returns>How the transport settles the message. A handler that throws is treated as <see cref="Settlement.DeadLetter"/>.</returns>
public delegate ValueTask<Settlement> DeliveryHandler(Envelope envelope, CancellationToken cancellationToken);
