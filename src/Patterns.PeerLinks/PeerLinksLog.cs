using Microsoft.Extensions.Logging;

namespace Patterns.PeerLinks;

internal static partial class PeerLinksLog
{
    [LoggerMessage(EventId = 7001, Level = LogLevel.Information, Message = "Peer-link node {NodeId} listens on {Address}.")]
    public static partial void Listening(ILogger logger, string nodeId, string address);

    [LoggerMessage(EventId = 7002, Level = LogLevel.Information, Message = "Link to {Peer} ({RemoteNode}) is up{Resumed}.")]
    public static partial void LinkUp(ILogger logger, Uri peer, string remoteNode, string resumed);

    [LoggerMessage(EventId = 7003, Level = LogLevel.Warning, Message = "Link to {Peer} broke: {Reason}. Dialling again in {Delay}.")]
    public static partial void LinkBroken(ILogger logger, Uri peer, string reason, TimeSpan delay);

    [LoggerMessage(EventId = 7010, Level = LogLevel.Debug, Message = "Dialling {Peer} failed again: {Reason}. Next attempt in {Delay}.")]
    public static partial void RetryFailed(ILogger logger, Uri peer, string reason, TimeSpan delay);

    [LoggerMessage(EventId = 7004, Level = LogLevel.Warning, Message = "Peer {Peer} is down: {Reason}. Its consumers are forgotten; messages in flight to it are delivered again.")]
    public static partial void PeerDown(ILogger logger, Uri peer, string reason);

    [LoggerMessage(EventId = 7005, Level = LogLevel.Warning, Message = "Refused a {Stream} link from {Remote}: {Reason}.")]
    public static partial void Refused(ILogger logger, string stream, string remote, string reason);

    [LoggerMessage(EventId = 7006, Level = LogLevel.Warning, Message = "Closed the {Stream} link from {RemoteNode}: malformed frame ({Reason}). Other links are unaffected.")]
    public static partial void Malformed(ILogger logger, string stream, string remoteNode, string reason);

    [LoggerMessage(EventId = 7007, Level = LogLevel.Error, Message = "Peer {Peer} refused this node's link: {Reason}.")]
    public static partial void RefusedByPeer(ILogger logger, Uri peer, string reason);

    [LoggerMessage(EventId = 7008, Level = LogLevel.Warning, Message = "Subscription {Address} of {RemoteNode} could not be mirrored here: {Reason}.")]
    public static partial void ProxyFailed(ILogger logger, string address, string remoteNode, string reason);

    [LoggerMessage(EventId = 7009, Level = LogLevel.Warning, Message = "Peers did not confirm subscription changes (version {Version}) within {Timeout}: {Peers}.")]
    public static partial void AnnounceTimedOut(ILogger logger, long version, TimeSpan timeout, string peers);

    [LoggerMessage(EventId = 7011, Level = LogLevel.Information, Message = "Peer {Peer} resolved through service discovery to {Endpoints}.")]
    public static partial void Resolved(ILogger logger, string peer, string endpoints);

    [LoggerMessage(EventId = 7012, Level = LogLevel.Warning, Message = "Peer {Peer} could not be resolved through service discovery ({Reason}); dialling it as written.")]
    public static partial void NotResolved(ILogger logger, string peer, string reason);

    [LoggerMessage(EventId = 7013, Level = LogLevel.Information, Message = "Peer {Peer} appeared in service discovery; linking to it.")]
    public static partial void PeerAppeared(ILogger logger, Uri peer);

    [LoggerMessage(EventId = 7014, Level = LogLevel.Information, Message = "Peer {Peer} is no longer in service discovery; unlinking it.")]
    public static partial void PeerVanished(ILogger logger, Uri peer);

    [LoggerMessage(EventId = 7015, Level = LogLevel.Warning, Message = "Resolving the peers through service discovery again failed ({Reason}); the links stay as they are.")]
    public static partial void RefreshFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 7016, Level = LogLevel.Debug, Message = "A bulk connection from {RemoteNode} was ended while it read: a newer one of the same link replaces it, or this node stops.")]
    public static partial void BulkReaderReplaced(ILogger logger, string remoteNode);

    [LoggerMessage(EventId = 7017, Level = LogLevel.Information, Message = "Node {NodeId} stopped: it told its peers it is leaving and closed its links.")]
    public static partial void Left(ILogger logger, string nodeId);
}
